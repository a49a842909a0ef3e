"""`mtm train`: the loop (`loop`) and its step (`step`), what a run builds before its first step
(`build`), the run's data (`run_data`), checkpoint
metadata (`metadata`), logging (`metrics`), the run directory (`rundir`), optimiser and schedule
(`optim`), the weight average (`ema`), memory trimming (`memory`), devices and process groups
(`runtime`). Validation and in-env evaluation, which the loop runs, live in mtm.evaluation."""
