# Finds every dependency of fmtrain and stops with a message that says how to get what is missing.
# On Debian: modules/setup-debian.sh; on a supercomputer: modules/sites/<site>.sh (module loads).

if(FMTRAIN_BARE_GPU)
  message(STATUS "fmtrain: FMTRAIN_BARE_GPU=ON: no MPI, HDF5 or hwloc; building the kernels, the "
          "model, fmtrain-bench and the CUDA tests only (no fmtrain executable)")
else()
# MPI (C bindings)
find_package(MPI REQUIRED COMPONENTS C)

# HDF5, parallel build required (checkpoints and datasets are read and written over MPI-IO)
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 COMPONENTS C)
if(NOT HDF5_FOUND)
  message(FATAL_ERROR "fmtrain needs a parallel HDF5 (C library). On Debian: apt-get install "
          "libhdf5-openmpi-dev; on a supercomputer: module load the site's parallel HDF5 (often "
          "'hdf5/<version>-mpi' or 'cray-hdf5-parallel').")
endif()
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "The HDF5 found (${HDF5_C_INCLUDE_DIRS}) is a serial build; fmtrain needs "
          "parallel HDF5. On Debian: apt-get install libhdf5-openmpi-dev (and remove "
          "libhdf5-dev's serial default from the search path, or set HDF5_ROOT); on a supercomputer: "
          "module load the site's parallel HDF5 module, not the serial one.")
endif()
add_library(fm_hdf5 INTERFACE)
target_include_directories(fm_hdf5 INTERFACE ${HDF5_C_INCLUDE_DIRS})
target_link_libraries(fm_hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_C)
target_compile_definitions(fm_hdf5 INTERFACE ${HDF5_C_DEFINITIONS})

endif() # NOT FMTRAIN_BARE_GPU

# OpenMP (the CPU compute core)
find_package(OpenMP REQUIRED COMPONENTS C)

find_package(PkgConfig REQUIRED)
if(NOT FMTRAIN_BARE_GPU)
  # hwloc (placement), through pkg-config
  pkg_check_modules(HWLOC REQUIRED IMPORTED_TARGET hwloc>=2.0)
endif()

# BLAS with a CBLAS interface; BLA_VENDOR is honoured (OpenBLAS on Debian, the vendor BLAS elsewhere)
if(NOT DEFINED BLA_VENDOR AND NOT DEFINED ENV{BLA_VENDOR})
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS QUIET)
  if(NOT BLAS_FOUND)
    unset(BLA_VENDOR)
  endif()
endif()
if(NOT BLAS_FOUND)
  find_package(BLAS REQUIRED)
endif()
find_path(FM_CBLAS_INCLUDE_DIR NAMES cblas.h PATH_SUFFIXES openblas include/openblas)
if(NOT FM_CBLAS_INCLUDE_DIR)
  message(FATAL_ERROR "No cblas.h found for the BLAS in ${BLAS_LIBRARIES}. On Debian: apt-get install "
          "libopenblas-dev; elsewhere load a BLAS module with a CBLAS interface (OpenBLAS, MKL, "
          "BLIS, Cray LibSci) or set FM_CBLAS_INCLUDE_DIR.")
endif()
include(CheckSymbolExists)
set(CMAKE_REQUIRED_LIBRARIES ${BLAS_LIBRARIES})
set(CMAKE_REQUIRED_INCLUDES ${FM_CBLAS_INCLUDE_DIR})
check_symbol_exists(cblas_sgemm "cblas.h" FM_HAVE_CBLAS_SGEMM)
check_symbol_exists(openblas_set_num_threads "cblas.h" FM_HAVE_OPENBLAS)
unset(CMAKE_REQUIRED_LIBRARIES)
unset(CMAKE_REQUIRED_INCLUDES)
if(NOT FM_HAVE_CBLAS_SGEMM)
  message(FATAL_ERROR "The BLAS in ${BLAS_LIBRARIES} has no cblas_sgemm; fmtrain needs a CBLAS "
          "interface (OpenBLAS, MKL, BLIS, Cray LibSci).")
endif()
if(BLA_VENDOR)
  set(FM_BLAS_VENDOR "${BLA_VENDOR}")
elseif(FM_HAVE_OPENBLAS)
  set(FM_BLAS_VENDOR "OpenBLAS")
else()
  set(FM_BLAS_VENDOR "generic CBLAS")
endif()
add_library(fm_blas INTERFACE)
target_include_directories(fm_blas INTERFACE ${FM_CBLAS_INCLUDE_DIR})
target_link_libraries(fm_blas INTERFACE ${BLAS_LIBRARIES})
if(FM_HAVE_OPENBLAS)
  target_compile_definitions(fm_blas INTERFACE FM_HAVE_OPENBLAS=1)
endif()
string(REPLACE ";" " " FM_BLAS_LIBRARIES_STR "${BLAS_LIBRARIES}")

# oneDNN (optional): the CPU backend's GEMM library (fp32 and bf16 matmul primitives; bf16 needs it).
# Without it the CPU matmuls are tiles of single-threaded CBLAS sgemm and the CPU backend is fp32
# only. Found through its CMake package (dnnl-config.cmake, target DNNL::dnnl): Debian's libdnnl-dev,
# Spack's onednn, EasyBuild's oneDNN (module load oneDNN), or -Ddnnl_DIR=<prefix>/lib/cmake/dnnl.
# Only a build with the OpenMP threading runtime runs on fmtrain's one OpenMP pool per rank
# (docs/performance.md); a TBB or sequential build is not used.
set(FMTRAIN_ONEDNN "AUTO" CACHE STRING
    "Use oneDNN for the CPU matmuls (fp32 and bf16): AUTO (when found), ON (required), OFF (CBLAS)")
set_property(CACHE FMTRAIN_ONEDNN PROPERTY STRINGS AUTO ON OFF)
set(FM_HAVE_ONEDNN 0)
set(FM_ONEDNN_WHY "FMTRAIN_ONEDNN=OFF")
if(NOT FMTRAIN_ONEDNN STREQUAL "OFF")
  find_package(dnnl CONFIG QUIET)
  if(NOT dnnl_FOUND)
    set(FM_ONEDNN_WHY "oneDNN not found (Debian: apt-get install libdnnl-dev; Spack: onednn; "
        "EasyBuild: module load oneDNN; or set dnnl_DIR)")
  elseif(NOT DNNL_CPU_RUNTIME STREQUAL "OMP")
    set(FM_ONEDNN_WHY "the oneDNN found (${dnnl_DIR}) uses the ${DNNL_CPU_RUNTIME} threading runtime, "
        "not OpenMP: it would not share the rank's OpenMP pool (Spack: onednn cpu_runtime=omp)")
  else()
    set(FM_HAVE_ONEDNN 1)
  endif()
  if(NOT FM_HAVE_ONEDNN AND FMTRAIN_ONEDNN STREQUAL "ON")
    message(FATAL_ERROR "FMTRAIN_ONEDNN=ON, but ${FM_ONEDNN_WHY}. Configure with "
            "-DFMTRAIN_ONEDNN=AUTO or OFF to build with the CBLAS fallback (fp32 only).")
  endif()
endif()
if(FM_HAVE_ONEDNN)
  set(FM_GEMM_DESC "oneDNN ${dnnl_VERSION} (${dnnl_DIR}, ${DNNL_CPU_RUNTIME} runtime): fp32 and bf16")
else()
  set(FM_GEMM_DESC "CBLAS ${FM_BLAS_VENDOR} (fp32 only; ${FM_ONEDNN_WHY})")
endif()
message(STATUS "fmtrain: CPU GEMM library: ${FM_GEMM_DESC}")

# CUDA (optional): AUTO builds the backend when nvcc is found
set(FM_HAVE_CUDA 0)
# The backend's sources live in kernels/cuda (kernels/cuda/CMakeLists.txt); without them there is
# nothing to build and --version says CUDA is off.
if(NOT FMTRAIN_CUDA STREQUAL "OFF" AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/kernels/cuda/CMakeLists.txt)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "80;90")
    endif()
    # one CUDA runtime per process: the shared libcudart, also for executables written in C that
    # link the backend (fm_cuda links CUDA::cudart)
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(FM_HAVE_CUDA 1)
  elseif(FMTRAIN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FMTRAIN_CUDA=ON but no CUDA compiler (nvcc) was found. Load the site's CUDA "
            "module or add /usr/local/cuda/bin to PATH, or configure with -DFMTRAIN_CUDA=OFF.")
  endif()
endif()
if(FM_HAVE_CUDA)
  set(FM_CUDA_DESC "on (architectures ${CMAKE_CUDA_ARCHITECTURES}, CUDA ${CUDAToolkit_VERSION})")
else()
  set(FM_CUDA_DESC "off")
endif()
