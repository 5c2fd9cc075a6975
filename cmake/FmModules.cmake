# Modules added after the foundation: one fm_module() line each (see CMakeLists.txt).
fm_module(schedule SOURCES src/schedule.c DEPS fm_status m)
fm_module(metrics SOURCES src/metrics.c DEPS fm_status fm_blas m)
fm_module(signals SOURCES src/signals.c DEPS fm_status)
fm_module(sampler SOURCES src/sampler.c DEPS fm_model fm_blas fm_status m)
fm_module(model SOURCES src/model.c DEPS fm_kernels fm_status OpenMP::OpenMP_C m)
fm_module(optimizer SOURCES src/optimizer.c DEPS fm_model fm_kernels fm_status m)
