# Spack package for fmtrain. Use it from a local repository:
#     spack repo add <fmtrain source>/modules/spack
#     spack install fmtrain +cuda cuda_arch=80 ^openmpi ^hdf5+mpi
# (or copy this directory into a site repository). Spack writes its own modulefiles; fmtrain's own
# CMake install also writes share/modulefiles/fmtrain/<version>.lua, which Spack users can ignore.
#
# Not tested with Spack in this repository (Spack is not installed here); the CMake options it passes
# are the ones tests/run.sh and the presets use.
from spack.package import *


class Fmtrain(CMakePackage, CudaPackage):
    """fmtrain trains GPT-2-style transformer language models on supercomputers: one MPI
    executable, an OpenMP + oneDNN/BLAS CPU core (fp32 and bf16), an optional CUDA backend,
    parallel HDF5 datasets and checkpoints, hwloc placement, batch scripts for Slurm."""

    homepage = "https://example.org/fmtrain"  # the project has no public home page yet
    git = "https://example.org/fmtrain.git"   # replace with the repository you build from

    maintainers("fmtrain")
    license("Apache-2.0", checked_by="fmtrain")

    version("main", branch="main")

    variant("native", default=False, description="Optimise for the build machine's CPU (-march=native)")
    variant("onednn", default=True,
            description="oneDNN for the CPU matmuls (fp32, and bf16 mixed precision); off: CBLAS, fp32 only")
    variant("tests", default=False, description="Build the test suite (needs cmocka)")

    depends_on("c", type="build")
    depends_on("cmake@3.24:", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("mpi")
    depends_on("hdf5+mpi")
    depends_on("hwloc@2:")
    depends_on("blas")
    # the OpenMP runtime: oneDNN's matmuls then run on fmtrain's one OpenMP pool per rank
    depends_on("onednn cpu_runtime=omp", when="+onednn")
    depends_on("cmocka", when="+tests", type=("build", "link"))

    def cmake_args(self):
        spec = self.spec
        args = [
            self.define_from_variant("FMTRAIN_NATIVE", "native"),
            self.define_from_variant("FMTRAIN_TESTS", "tests"),
            self.define("FMTRAIN_CUDA", "ON" if spec.satisfies("+cuda") else "OFF"),
            self.define("FMTRAIN_ONEDNN", "ON" if spec.satisfies("+onednn") else "OFF"),
            self.define("HDF5_ROOT", spec["hdf5"].prefix),
            # Spack generates the modulefiles; do not record the build environment's modules.
            self.define("FMTRAIN_MODULE_DEPENDS", "none"),
        ]
        if spec.satisfies("+cuda"):
            archs = spec.variants["cuda_arch"].value
            if archs and archs[0] != "none":
                args.append(self.define("CMAKE_CUDA_ARCHITECTURES", ";".join(archs)))
        if spec["blas"].name == "openblas":
            args.append(self.define("BLA_VENDOR", "OpenBLAS"))
        elif spec["blas"].name in ("intel-oneapi-mkl", "intel-mkl"):
            args.append(self.define("BLA_VENDOR", "Intel10_64lp"))
        return args

    def setup_run_environment(self, env):
        env.set("FMTRAIN_ROOT", self.prefix)
        env.set("FMTRAIN_JOBSCRIPTS", join_path(self.prefix.share, "fmtrain", "jobscripts"))
        env.set("FMTRAIN_INPUTS", join_path(self.prefix.share, "fmtrain", "inputs"))
