"""The paper's units: KVCache in MiB, Gbps = 10⁹ bit/s (Table 5: 701.3 MiB / 1.84 s = 3.19 Gbps)."""

BITS_PER_MIB = 8 * 2**20
BITS_PER_GBIT = 1e9


def mib_to_gbit(mib: float) -> float:
    return mib * BITS_PER_MIB / BITS_PER_GBIT


def gbps_to_mib_per_s(gbps: float) -> float:
    return gbps * BITS_PER_GBIT / BITS_PER_MIB
