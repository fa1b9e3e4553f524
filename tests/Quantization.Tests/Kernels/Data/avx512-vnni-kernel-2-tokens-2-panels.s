# The AVX-512 VNNI W8A8 kernel (src/Quantization/Kernels/X86/Avx512VnniKernel.cs) as GNU as 2.40 assembles it; the test
# compares Avx512VnniKernel.Assemble with avx512-vnni-kernel-2-tokens-2-panels.hex, made by:
#   as avx512-vnni-kernel-2-tokens-2-panels.s -o k.o && objcopy -O binary -j .text k.o k.bin && xxd -p k.bin | tr -d '\n' > avx512-vnni-kernel-2-tokens-2-panels.hex
# {disp32} asks for the 32-bit displacement the kernel's assembler writes wherever one is not 0.
.intel_syntax noprefix
.text
kernel:
endbr64
mov rax, [rdi]
mov rcx, [rdi + 8]
mov rdx, [rdi + 16]
mov r8, [rdi + 24]
mov r9, [rdi + 32]
mov r11, [rdi + 40]
lea rsi, [rcx + rdx * 2]
add rsi, rdx
lea r10, [rsi + rdx * 2]
add r10, rdx
vmovdqu32 zmm0, [r9]
{disp32} vmovdqu32 zmm1, [r9 + 64]
{disp32} vmovdqu32 zmm2, [r9 + 128]
{disp32} vmovdqu32 zmm3, [r9 + 192]
{disp32} vmovdqu32 zmm4, [r9 + 256]
{disp32} vmovdqu32 zmm5, [r9 + 320]
{disp32} vmovdqu32 zmm6, [r9 + 384]
{disp32} vmovdqu32 zmm7, [r9 + 448]
loop:
vmovdqu32 zmm28, [rax]
{disp32} vmovdqu32 zmm29, [rax + 64]
vmovdqu32 zmm30, [rax + r11]
{disp32} vmovdqu32 zmm31, [rax + r11 + 64]
vpbroadcastd zmm16, dword ptr [rcx]
vpdpbusd zmm0, zmm16, zmm28
vpdpbusd zmm1, zmm16, zmm29
vpdpbusd zmm4, zmm16, zmm30
vpdpbusd zmm5, zmm16, zmm31
vpbroadcastd zmm17, dword ptr [rcx + rdx]
vpdpbusd zmm2, zmm17, zmm28
vpdpbusd zmm3, zmm17, zmm29
vpdpbusd zmm6, zmm17, zmm30
vpdpbusd zmm7, zmm17, zmm31
add rax, 128
add rcx, 4
add rsi, 4
add r10, 4
dec r8
{disp32} jnz loop
vmovdqu32 [r9], zmm0
{disp32} vmovdqu32 [r9 + 64], zmm1
{disp32} vmovdqu32 [r9 + 128], zmm2
{disp32} vmovdqu32 [r9 + 192], zmm3
{disp32} vmovdqu32 [r9 + 256], zmm4
{disp32} vmovdqu32 [r9 + 320], zmm5
{disp32} vmovdqu32 [r9 + 384], zmm6
{disp32} vmovdqu32 [r9 + 448], zmm7
vzeroupper
ret
