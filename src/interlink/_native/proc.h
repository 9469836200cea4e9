/* proc.h - process identities that survive pid reuse, and liveness checks.
 *
 * An identity packs a pid with the process start time (clock ticks since boot,
 * /proc/<pid>/stat field 22), so a recycled pid is never taken for the process
 * that held it before.  Layout of the 64-bit word:
 *     bits  0..21  pid (Linux pid_max is at most 2^22)
 *     bits 22..59  start time modulo 2^38 ticks (8.7 years at 100 Hz)
 *     bits 60..63  role bits, free for the caller (ignored by these functions)
 * Zero is never a valid identity.
 */
#ifndef IL_PROC_H
#define IL_PROC_H

#include <stdint.h>

#define IL_IDENT_PID_BITS 22
#define IL_IDENT_START_BITS 38
#define IL_IDENT_MASK ((UINT64_C(1) << 60) - 1)
#define IL_IDENT_ROLE_SHIFT 60

/* The identity of the calling process (recomputed after fork). 0 on failure. */
uint64_t il_ident_self(void);

/* Build an identity from a pid and its start time in ticks. */
uint64_t il_ident_make(uint32_t pid, uint64_t start_ticks);

static inline uint32_t il_ident_pid(uint64_t ident)
{
    return (uint32_t)(ident & ((UINT64_C(1) << IL_IDENT_PID_BITS) - 1));
}

static inline uint64_t il_ident_bare(uint64_t word) { return word & IL_IDENT_MASK; }

static inline unsigned il_ident_roles(uint64_t word)
{
    return (unsigned)(word >> IL_IDENT_ROLE_SHIFT);
}

/* 1 when the process named by the identity is running (zombies count as dead),
 * 0 when it has exited or its pid now belongs to another process. */
int il_ident_alive(uint64_t ident);

/* Read pid's start time; returns 0 on success, -1 if there is no such process
 * or it is a zombie. */
int il_proc_start_ticks(uint32_t pid, uint64_t *start_ticks);

/* Incremented in every child after fork(); handles compare it to notice that
 * they were inherited by a new process. */
uint64_t il_fork_generation(void);

#endif
