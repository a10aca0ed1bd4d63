"""ddpbench's report generator: result documents in; report.md, report.html, PNGs and TensorBoard
scalars out. load (documents -> cells), stats (across repeats), compare (pairs), plots, render,
tensorboard, cli."""
