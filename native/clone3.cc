// The clone3 trampoline, modelled on glibc's sysdeps/unix/sysv/linux/x86_64/clone3.S.
// rdi = args, rsi = size, rdx = fn, rcx = arg. The syscall preserves rdx and r8 (it clobbers
// only rcx and r11), so the child still has fn in rdx and arg (moved to r8). The kernel has
// already switched the child to args->stack + args->stack_size (16-byte aligned by the caller).
#include "clone3.h"

#if defined(__x86_64__)
asm(R"(
    .text
    .globl corral_clone3
    .hidden corral_clone3
    .type corral_clone3, @function
    .p2align 4
corral_clone3:
    mov %rcx, %r8
    mov $435, %eax
    syscall
    test %rax, %rax
    jz 1f
    ret
1:
    xor %ebp, %ebp
    mov %r8, %rdi
    call *%rdx
    mov %eax, %edi
    mov $231, %eax
    syscall
    hlt
    .size corral_clone3, .-corral_clone3
)");
#else
#include <errno.h>
extern "C" long corral_clone3(corral::CloneArgs*, size_t, int (*)(void*), void*) { return -ENOSYS; }
#endif
