#!/usr/bin/python3
"""Writes the hwloc XML topologies used by the placement tests (tests/topology/*.xml).

The machines are described here in a few lines each, so the fixtures can be read and regenerated:
    /usr/bin/python3 tests/topology/make_fixtures.py tests/topology
Each file is checked by the tests through hwloc itself (hwloc_topology_set_xml), so a mistake here
shows up as a load failure or a wrong plan, not silently.

  two-socket.xml   2 packages x 4 NUMA domains x 16 cores x 2 hyperthreads (128 cores, 256 PUs),
                   numbered like Intel/AMD Linux machines: core c has PUs c and c+128.
  four-gpu.xml     2 packages x 2 NUMA domains x 12 cores x 2 hyperthreads (48 cores), one GPU
                   (CUDA device cuda0..cuda3) behind a PCI bridge on each NUMA domain.
  grace-hopper.xml 1 package of 72 single-threaded cores with its LPDDR NUMA node 0, the Hopper GPU's
                   HBM as CPU-less NUMA node 1 (subtype GPUMemory), and GPU cuda0.
  leonardo-booster.xml  a Leonardo Booster node (CINECA): 1 package (Xeon 8358) of 32 single-threaded
                   cores in 2 sub-NUMA domains of 16, and all four A100-64 GPUs (cuda0..cuda3) on
                   NUMA domain 0, as CINECA's Booster page shows it (`nvidia-smi topo -m`: CPU
                   affinity 0-15, NUMA affinity 0 for every GPU).
"""
import os
import sys


def bitmap(ids):
    """A set of indexes as hwloc's XML bitmap string: 32-bit hex words, most significant first."""
    if not ids:
        return "0x0"
    words = [0] * (max(ids) // 32 + 1)
    for i in ids:
        words[i // 32] |= 1 << (i % 32)
    return ",".join("0x%08x" % w for w in reversed(words))


class Gen:
    def __init__(self):
        self.gp = 0
        self.lines = []

    def gp_index(self):
        self.gp += 1
        return self.gp

    def sets(self, cpus, nodes):
        c, n = bitmap(sorted(cpus)), bitmap(sorted(nodes))
        return 'cpuset="%s" complete_cpuset="%s" nodeset="%s" complete_nodeset="%s"' % (c, c, n, n)

    def open(self, depth, text):
        self.lines.append("  " * depth + text)

    def gpu(self, depth, bus, cuda_index, model, memory_mib):
        g = self.gp_index
        self.open(depth, '<object type="Bridge" gp_index="%d" bridge_type="0-1" depth="0" '
                  'bridge_pci="0000:[%02x-%02x]">' % (g(), bus, bus))
        self.open(depth + 1, '<object type="PCIDev" gp_index="%d" pci_busid="0000:%02x:00.0" '
                  'pci_type="0302 [10de:2330] [10de:16c1] a1" pci_link_speed="31.5">' % (g(), bus))
        self.open(depth + 2, '<object type="OSDev" gp_index="%d" name="cuda%d" osdev_type="5" '
                  'subtype="CUDA">' % (g(), cuda_index))
        self.open(depth + 3, '<info name="Backend" value="CUDA"/>')
        self.open(depth + 3, '<info name="GPUVendor" value="NVIDIA Corporation"/>')
        self.open(depth + 3, '<info name="GPUModel" value="%s"/>' % model)
        self.open(depth + 3, '<info name="CUDAGlobalMemorySize" value="%d"/>' % (memory_mib * 1024))
        self.open(depth + 2, "</object>")
        self.open(depth + 1, "</object>")
        self.open(depth, "</object>")


def machine(name, packages, numa_per_pack, cores_per_numa, pus_per_core, gpus_on_numa=(),
            gpu_model="", gpu_memory_numa=False, gpu_memory_mib=81559):
    """Writes one machine; returns the XML text. gpus_on_numa names the NUMA domain of each GPU
    (a domain named twice holds two GPUs)."""
    gen = Gen()
    ncores = packages * numa_per_pack * cores_per_numa
    pu = lambda core, t: core + t * ncores  # Linux numbering: siblings are ncores apart
    all_pus = {pu(c, t) for c in range(ncores) for t in range(pus_per_core)}
    nnuma = packages * numa_per_pack + (1 if gpu_memory_numa else 0)
    all_nodes = set(range(nnuma))
    mem = 64 << 30
    o = gen.open
    o(0, '<?xml version="1.0" encoding="UTF-8"?>')
    o(0, '<!DOCTYPE topology SYSTEM "hwloc2.dtd">')
    o(0, '<topology version="2.0">')
    s = gen.sets(all_pus, all_nodes)
    o(1, '<object type="Machine" os_index="0" %s allowed_cpuset="%s" allowed_nodeset="%s" '
      'gp_index="%d">' % (s, bitmap(sorted(all_pus)), bitmap(sorted(all_nodes)), gen.gp_index()))
    o(2, '<info name="Backend" value="Linux"/>')
    o(2, '<info name="fmtrainFixture" value="%s"/>' % name)
    core = 0
    cuda = 0
    for p in range(packages):
        pnodes = set(range(p * numa_per_pack, (p + 1) * numa_per_pack))
        pcores = range(core, core + numa_per_pack * cores_per_numa)
        ppus = {pu(c, t) for c in pcores for t in range(pus_per_core)}
        if gpu_memory_numa:
            pnodes |= {nnuma - 1}
        o(2, '<object type="Package" os_index="%d" %s gp_index="%d">' % (p, gen.sets(ppus, pnodes),
                                                                        gen.gp_index()))
        o(3, '<info name="CPUModel" value="%s"/>' % ("NVIDIA Grace" if gpu_memory_numa
                                                     else "Example CPU %d-core" % len(pcores)))
        for n in range(numa_per_pack):
            node = p * numa_per_pack + n
            ncs = range(core, core + cores_per_numa)
            npus = {pu(c, t) for c in ncs for t in range(pus_per_core)}
            grouped = numa_per_pack > 1
            d = 3
            if grouped:
                o(d, '<object type="Group" %s gp_index="%d" kind="1001" subkind="0">'
                  % (gen.sets(npus, {node}), gen.gp_index()))
                d += 1
            o(d, '<object type="NUMANode" os_index="%d" %s gp_index="%d" local_memory="%d"/>'
              % (node, gen.sets(npus, {node}), gen.gp_index(), mem))
            for c in ncs:
                cpus = {pu(c, t) for t in range(pus_per_core)}
                o(d, '<object type="Core" os_index="%d" %s gp_index="%d">'
                  % (c, gen.sets(cpus, {node}), gen.gp_index()))
                for t in range(pus_per_core):
                    o(d + 1, '<object type="PU" os_index="%d" %s gp_index="%d"/>'
                      % (pu(c, t), gen.sets({pu(c, t)}, {node}), gen.gp_index()))
                o(d, "</object>")
            for i in range(list(gpus_on_numa).count(node)):
                gen.gpu(d, 0x10 + 0x20 * node + 4 * i, cuda, gpu_model, gpu_memory_mib)
                cuda += 1
            if grouped:
                o(3, "</object>")
            core += cores_per_numa
        if gpu_memory_numa:
            o(3, '<object type="NUMANode" os_index="%d" %s gp_index="%d" subtype="GPUMemory" '
              'local_memory="%d"/>' % (nnuma - 1, gen.sets(ppus, pnodes), gen.gp_index(), 96 << 30))
            gen.gpu(3, 0x09, cuda, gpu_model, 97871)
            cuda += 1
        o(2, "</object>")
    o(1, "</object>")
    o(0, "</topology>")
    return "\n".join(gen.lines) + "\n"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    fixtures = {
        "two-socket.xml": machine("two-socket", 2, 4, 16, 2),
        "four-gpu.xml": machine("four-gpu", 2, 2, 12, 2, gpus_on_numa=(0, 1, 2, 3),
                                gpu_model="NVIDIA A100-SXM4-80GB"),
        "grace-hopper.xml": machine("grace-hopper", 1, 1, 72, 1, gpu_model="NVIDIA GH200 480GB",
                                    gpu_memory_numa=True),
        "leonardo-booster.xml": machine("leonardo-booster", 1, 2, 16, 1, gpus_on_numa=(0, 0, 0, 0),
                                        gpu_model="NVIDIA A100-SXM-64GB", gpu_memory_mib=65536),
    }
    for name, text in fixtures.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
