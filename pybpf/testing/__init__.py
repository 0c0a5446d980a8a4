"""Tools for testing code that uses pybpf: ``netns`` (throwaway network namespaces joined by a veth
pair, for tests, demos and benchmarks that need traffic without touching the host's network),
``cgroups`` (a throwaway child cgroup, and processes and sockets made inside it)."""
