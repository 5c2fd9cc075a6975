# Modules added after the foundation: one fm_module() line each (see CMakeLists.txt).
