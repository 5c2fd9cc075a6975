# Modules added after the foundation: one fm_module() line each (see CMakeLists.txt).
fm_module(schedule SOURCES src/schedule.c DEPS fm_status m)
fm_module(metrics SOURCES src/metrics.c DEPS fm_status fm_blas m)
fm_module(signals SOURCES src/signals.c DEPS fm_status)
