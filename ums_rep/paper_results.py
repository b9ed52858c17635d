"""The numbers UMS-Rep reports, in one place: what the report prints in its paper column and the
claims registry compares against (Tables 2-10; the echo encoder's Talos choice of Section 4.2.1).

A module of its own, with no imports from the report or the claims, so that both read it
without importing each other.
"""
from ums_rep.presets import PAPER_ECHO_CHOICE

PAPER = {
    # UMS-Rep Table 2: PSNR / SSIM / MS-SSIM of the CDAE on RSNA
    "table2": {"gaussian10": (39.05, 0.96, 0.99), "gaussian20": (35.38, 0.91, 0.98), "gaussian30": (32.75, 0.89, 0.95),
               "gaussian40": (30.54, 0.85, 0.91), "gaussian50": (28.35, 0.79, 0.88), "poisson": (33.37, 0.93, 0.97)},
    # UMS-Rep Tables 3, 5, 7, 9: (strategy, task) -> accuracy, F-score, IoU, MCC
    "tasks": {
        ("independent", "lung_seg"): (0.99, 0.96, 0.98, None), ("alternating", "lung_seg"): (0.99, 0.95, 0.96, None),
        ("joint", "lung_seg"): (0.92, 0.92, 0.94, None), ("baseline", "lung_seg"): (0.97, 0.91, 0.95, None),
        ("independent", "abnormal"): (0.86, 0.83, None, 0.68), ("alternating", "abnormal"): (0.85, 0.82, None, 0.66),
        ("joint", "abnormal"): (0.83, 0.80, None, 0.63), ("baseline", "abnormal"): (0.80, 0.80, None, 0.60),
        ("independent", "bacterial_vs_normal"): (0.95, 0.95, None, 0.90),
        ("alternating", "bacterial_vs_normal"): (0.96, 0.96, None, 0.92),
        ("joint", "bacterial_vs_normal"): (0.96, 0.95, None, 0.91),
        ("baseline", "bacterial_vs_normal"): (0.94, 0.94, None, 0.89),
        ("independent", "viral_vs_normal"): (0.95, 0.92, None, 0.88),
        ("alternating", "viral_vs_normal"): (0.96, 0.93, None, 0.90),
        ("joint", "viral_vs_normal"): (0.97, 0.94, None, 0.92), ("baseline", "viral_vs_normal"): (0.93, 0.90, None, 0.86),
        ("independent", "bacterial_vs_viral"): (0.81, 0.76, None, 0.56),
        ("alternating", "bacterial_vs_viral"): (0.82, 0.77, None, 0.58),
        ("joint", "bacterial_vs_viral"): (0.83, 0.80, None, 0.62),
        ("baseline", "bacterial_vs_viral"): (0.80, 0.75, None, 0.54),
        ("independent", "envelope_seg"): (0.97, 0.95, 0.98, None),
        ("alternating", "envelope_seg"): (0.96, 0.94, 0.98, None),
        ("joint", "envelope_seg"): (0.91, 0.93, 0.94, None), ("baseline", "envelope_seg"): (0.93, 0.92, 0.95, None),
        ("independent", "quality"): (0.97, 0.96, None, 0.92), ("alternating", "quality"): (0.95, 0.91, None, 0.87),
        ("joint", "quality"): (0.93, 0.88, None, 0.83), ("baseline", "quality"): (0.88, 0.85, None, 0.78),
        ("independent", "flow"): (0.93, 0.91, None, 0.85), ("alternating", "flow"): (0.91, 0.90, None, 0.82),
        ("joint", "flow"): (0.92, 0.90, None, 0.84), ("baseline", "flow"): (0.91, 0.88, None, 0.81),
        ("independent", "mv_vs_ma"): (0.92, 0.91, None, 0.83), ("alternating", "mv_vs_ma"): (0.94, 0.94, None, 0.87),
        ("joint", "mv_vs_ma"): (0.95, 0.95, None, 0.89), ("baseline", "mv_vs_ma"): (0.91, 0.91, None, 0.81),
        ("independent", "mv_vs_tr"): (0.95, 0.94, None, 0.88), ("alternating", "mv_vs_tr"): (0.96, 0.96, None, 0.91),
        ("joint", "mv_vs_tr"): (0.97, 0.96, None, 0.93), ("baseline", "mv_vs_tr"): (0.94, 0.93, None, 0.86),
        ("independent", "ma_vs_tr"): (0.97, 0.96, None, 0.92), ("alternating", "ma_vs_tr"): (0.98, 0.96, None, 0.93),
        ("joint", "ma_vs_tr"): (0.98, 0.98, None, 0.95), ("baseline", "ma_vs_tr"): (0.98, 0.96, None, 0.93),
    },
    # UMS-Rep Tables 4, 6, 8, 10: totals (minutes, trainable parameters), shared approach and baseline;
    # "left_out": the source model a table leaves out of both sides (Table 6), which the package's
    # cost rule (ums_rep.claims.COST_RULE) adds back to both
    "compute": {"cxr-hetero": {"shared": (312.82, 1_882_279), "baseline": (459.47, 3_160_070)},
                "cxr-homo": {"shared": (4.81, 887_145), "baseline": (34.15, 4_720_518),
                             "left_out": (302.20, 800_067)},
                "echo-hetero": {"shared": (38.77, 1_838_042), "baseline": (195.63, 3_933_509)},
                "echo-homo": {"shared": (33.69, 1_347_260), "baseline": (36.77, 4_720_518)}},
    "talos_echo": PAPER_ECHO_CHOICE,  # what the paper's Talos chose for the echo encoder (Section 4.2.1)
}
