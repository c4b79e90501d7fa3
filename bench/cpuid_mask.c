// SPDX-License-Identifier: Apache-2.0
// CPUID answered with chosen feature bits cleared, for this process (bench/cpuid_limit.py).
//
// onnxruntime's MLAS picks its kernels from CPUID and has no switch to cap them, so a peer
// limited to an older CPU's instruction sets needs CPUID itself to answer as that CPU would.
// Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, on CPUs and hypervisors that offer it)
// turns each CPUID in the process into SIGSEGV; the handler runs the real instruction with
// faulting briefly off, clears the masked bits and steps over it. The setting is per thread
// and inherited by threads created later: apply the mask before the libraries start theirs.
#define _GNU_SOURCE  // REG_RIP and the other register names of ucontext_t
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012
#define MAX_RULES 16

struct rule {
  uint32_t leaf, subleaf;
  int any_subleaf;  // leaves such as 1 ignore ECX: callers leave anything in it
  uint32_t clear[4];  // eax, ebx, ecx, edx
};

static struct rule rules[MAX_RULES];
static int rule_count;
static struct sigaction previous;

static void run_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
  __asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                       : "a"(leaf), "c"(subleaf));
}

static void on_segv(int sig, siginfo_t *info, void *context) {
  greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
  const uint8_t *ip = (const uint8_t *)reg[REG_RIP];
  // A faulting CPUID is a general-protection fault (SI_KERNEL) at readable code; a page fault
  // (a jump to nowhere among them) is not read at its address.
  if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {  // not ours
    if (previous.sa_flags & SA_SIGINFO) {
      previous.sa_sigaction(sig, info, context);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
      previous.sa_handler(sig);
    } else {
      signal(sig, SIG_DFL);  // the fault repeats on return and ends the process as usual
    }
    return;
  }
  int saved_errno = errno;
  uint32_t leaf = (uint32_t)reg[REG_RAX], subleaf = (uint32_t)reg[REG_RCX], r[4];
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
  run_cpuid(leaf, subleaf, r);
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
  for (int i = 0; i < rule_count; i++) {
    if (rules[i].leaf == leaf && (rules[i].any_subleaf || rules[i].subleaf == subleaf)) {
      for (int k = 0; k < 4; k++) r[k] &= ~rules[i].clear[k];
    }
  }
  reg[REG_RAX] = r[0];
  reg[REG_RBX] = r[1];
  reg[REG_RCX] = r[2];
  reg[REG_RDX] = r[3];
  reg[REG_RIP] += 2;
  errno = saved_errno;
}

// Parse "leaf.subleaf:eax,ebx,ecx,edx;..." (hex; subleaf "*" for any) into rules; 0 or EINVAL.
static int parse(const char *spec) {
  rule_count = 0;
  for (const char *p = spec; *p;) {
    if (rule_count == MAX_RULES) return EINVAL;
    struct rule *r = &rules[rule_count++];
    char *end;
    r->leaf = (uint32_t)strtoul(p, &end, 16);
    if (*end != '.') return EINVAL;
    r->any_subleaf = end[1] == '*';
    if (r->any_subleaf) {
      end += 2;
    } else {
      r->subleaf = (uint32_t)strtoul(end + 1, &end, 16);
    }
    if (*end != ':') return EINVAL;
    for (int k = 0; k < 4; k++) {
      r->clear[k] = (uint32_t)strtoul(end + 1, &end, 16);
      if (*end != (k < 3 ? ',' : ';') && !(k == 3 && *end == '\0')) return EINVAL;
    }
    p = *end ? end + 1 : end;
  }
  return 0;
}

// Answer every later CPUID of this thread (and of the threads it starts) with the bits of
// ``spec`` cleared. Returns 0, EINVAL for a malformed spec, or the errno of arch_prctl
// (ENODEV: no CPUID faulting on this CPU or hypervisor).
int tvm_qnn_cpuid_mask(const char *spec) {
  int err = parse(spec);
  if (err) return err;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGSEGV, &action, &previous)) return errno;
  if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0)) {
    err = errno;
    sigaction(SIGSEGV, &previous, NULL);
    return err;
  }
  return 0;
}

// What this process's CPUID answers (masked once a mask is on): for checks.
void tvm_qnn_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
  run_cpuid(leaf, subleaf, out);
}

// Whether SIGSEGV still reaches this mask's handler.
int tvm_qnn_cpuid_hooked(void) {
  struct sigaction current;
  if (sigaction(SIGSEGV, NULL, &current)) return 0;
  return (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_segv;
}
