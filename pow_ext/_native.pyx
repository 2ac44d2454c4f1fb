# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled core of the native PoW backend (see bmnode/pow/native.py for the Python API).

Wraps pow_core.c: ISA detection, trial values per ISA and a threaded search job whose C threads
run without the GIL while the caller polls it.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport malloc, free

cdef extern from "pow_core.h" nogil:
    ctypedef struct bm_job:
        pass
    ctypedef struct bm_hit:
        uint64_t nonce
        uint64_t trial
    int BM_ISA_SCALAR
    int BM_ISA_AVX2
    int BM_ISA_AVX512
    unsigned bm_supported_isas()
    unsigned bm_isa_lanes(int isa)
    int bm_trial_values(int isa, const uint8_t *initial_hash, const uint64_t *nonces, size_t n, uint64_t *out)
    bm_job *bm_job_new(int isa, const uint8_t *initial_hash, uint64_t target, uint64_t first,
                       uint64_t last, int nthreads)
    int bm_job_start(bm_job *j)
    int bm_job_wait(bm_job *j, unsigned timeout_ms)
    void bm_job_cancel(bm_job *j)
    void bm_job_join(bm_job *j)
    uint64_t bm_job_trials(const bm_job *j)
    int bm_job_result(bm_job *j, bm_hit *hit)
    void bm_job_free(bm_job *j)
    int BM_OPCLASS_COUNT
    uint64_t bm_kernel_op_counts(uint64_t *out)
    int BM_MIX_KERNEL
    int BM_MIX_PEAK
    double bm_vector_mix_rate(int isa, int mix, double seconds)

#: ISA names, best first, with their identifiers in pow_core.h
ISA_IDS = {"avx512": BM_ISA_AVX512, "avx2": BM_ISA_AVX2, "scalar": BM_ISA_SCALAR}


def supported_isas():
    """Names of the ISAs this build can run on this CPU, fastest first."""
    cdef unsigned m = bm_supported_isas()
    return [name for name, i in ISA_IDS.items() if (m >> i) & 1]


def lanes(str isa):
    """Nonces one kernel call of this ISA tests at once."""
    return bm_isa_lanes(ISA_IDS[isa])


def trial_values(str isa, bytes initial_hash, nonces):
    """Trial values of ``nonces`` (ints in [0, 2**64)) computed by the kernel of ``isa``."""
    cdef list ns = list(nonces)
    cdef size_t n = len(ns)
    cdef size_t i
    cdef int rc
    cdef int isa_id = ISA_IDS[isa]
    cdef const uint8_t *ih
    if len(initial_hash) != 64:
        raise ValueError("initial hash must be 64 bytes")
    ih = initial_hash
    if n == 0:
        return []
    cdef uint64_t *buf = <uint64_t *>malloc(2 * n * sizeof(uint64_t))
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            buf[i] = ns[i]
        with nogil:
            rc = bm_trial_values(isa_id, ih, buf, n, buf + n)
        if rc != 0:
            raise ValueError(f"ISA {isa!r} is not supported here")
        return [buf[n + i] for i in range(n)]
    finally:
        free(buf)


#: operation classes of bm_kernel_op_counts, in its order
OP_CLASSES = ("add", "rotate", "shift", "logic")


def kernel_op_counts():
    """``(counts, trial)``: vector operations of each class in one trial of one lane, counted by
    running the kernel's source over counting operations (benchmarks use it to state the
    ceiling), and the trial value that run computed (nonce 0, initial hash 01 00 .. 00), so a
    test can check the counted code is the real kernel."""
    cdef uint64_t out[8]
    cdef uint64_t trial
    assert BM_OPCLASS_COUNT == len(OP_CLASSES) <= 8
    trial = bm_kernel_op_counts(out)
    return {name: out[i] for i, name in enumerate(OP_CLASSES)}, trial


def vector_mix_rate(str isa, double seconds, str mix="kernel"):
    """Vector operations per second one core sustains in the kernel's operation mix (``mix``
    "kernel") or in adds alone ("peak"), measured for about ``seconds`` on the calling thread;
    None where the ISA has no probe (only avx512) or is not supported here."""
    cdef double r
    cdef int isa_id = ISA_IDS[isa]
    cdef int mix_id
    if mix not in ("kernel", "peak"):
        raise ValueError("mix must be 'kernel' or 'peak'")
    mix_id = BM_MIX_KERNEL if mix == "kernel" else BM_MIX_PEAK
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    with nogil:
        r = bm_vector_mix_rate(isa_id, mix_id, seconds)
    return None if r < 0 else r


cdef class Job:
    """One search over nonces ``first .. last`` (inclusive) on ``threads`` C threads.

    ``start()`` returns at once; ``wait(timeout)`` blocks (without the GIL) until the threads are
    done or the timeout passes; ``cancel()`` asks them to stop; ``join()`` waits for them.
    Dropping the object cancels and joins, so no thread outlives it.
    """

    cdef bm_job *j
    cdef bytes ih

    def __cinit__(self, str isa, bytes initial_hash, uint64_t target, uint64_t first,
                  uint64_t last, int threads):
        self.j = NULL
        if len(initial_hash) != 64:
            raise ValueError("initial hash must be 64 bytes")
        self.ih = initial_hash
        self.j = bm_job_new(ISA_IDS[isa], <const uint8_t *>self.ih, target, first, last, threads)
        if self.j == NULL:
            raise ValueError("bad search job (unsupported ISA, empty range or threads < 1)")

    def start(self):
        """Starts the threads; returns how many started."""
        cdef int n
        with nogil:
            n = bm_job_start(self.j)
        if n == 0:
            raise RuntimeError("could not start any search thread")
        return n

    def wait(self, double timeout):
        """True once every thread has finished; False if ``timeout`` seconds passed first."""
        cdef unsigned ms = <unsigned>(timeout * 1000.0) if timeout > 0 else 0
        cdef int r
        with nogil:
            r = bm_job_wait(self.j, ms)
        return bool(r)

    def cancel(self):
        bm_job_cancel(self.j)

    def join(self):
        with nogil:
            bm_job_join(self.j)

    @property
    def trials(self):
        """Trials done so far, all threads together."""
        return bm_job_trials(self.j)

    def result(self):
        """``(nonce, trial_value)`` of the smallest solution found, or None."""
        cdef bm_hit h
        if bm_job_result(self.j, &h):
            return (h.nonce, h.trial)
        return None

    def __dealloc__(self):
        if self.j != NULL:
            with nogil:
                bm_job_free(self.j)
            self.j = NULL
