# Modules added after the foundation: one fm_module() line each (see CMakeLists.txt).
fm_module(schedule SOURCES src/schedule.c DEPS fm_status m)
fm_module(metrics SOURCES src/metrics.c DEPS fm_kernels fm_status m)
fm_module(signals SOURCES src/signals.c DEPS fm_status)
fm_module(sampler SOURCES src/sampler.c DEPS fm_model fm_blas fm_status m)
fm_module(trainer SOURCES src/trainer.c
          DEPS fm_comm fm_topology fm_dataset fm_model fm_optimizer fm_schedule fm_metrics fm_signals
               fm_config fm_kernels fm_status m)
fm_module(model SOURCES src/model.c DEPS fm_kernels fm_status OpenMP::OpenMP_C m)
fm_module(optimizer SOURCES src/optimizer.c DEPS fm_model fm_kernels fm_status m)
find_package(Threads REQUIRED) # dataset reader's read-ahead thread
fm_module(h5util SOURCES src/h5util.c DEPS fm_status fm_hdf5)
fm_module(tokenizer SOURCES src/tokenizer.c DEPS fm_h5util fm_status fm_hdf5)
fm_module(dataset SOURCES src/dataset.c src/reader.c DEPS fm_tokenizer fm_status fm_hdf5 Threads::Threads)
find_package(ZLIB REQUIRED) # checkpoint CRC-32 (crc32, crc32_combine)
fm_module(checkpoint SOURCES src/checkpoint.c src/checkpoint_file.c src/checkpoint_dir.c
                             src/checkpoint_crc.c
          DEPS fm_trainer fm_model fm_optimizer fm_tokenizer fm_config fm_metrics fm_status fm_hdf5
               ZLIB::ZLIB MPI::MPI_C OpenMP::OpenMP_C)
fm_module(comm SOURCES src/comm.c DEPS fm_status MPI::MPI_C)
fm_module(topology SOURCES src/topology.c DEPS fm_comm fm_status PkgConfig::HWLOC OpenMP::OpenMP_C)
