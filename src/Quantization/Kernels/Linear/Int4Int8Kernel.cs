using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The W4A8 kernel: int8 activations (one scale per token) times the unsigned 4-bit codes of a
/// <see cref="PackedInt4Weight"/>, summed exactly in int32 per group, then scaled per group in float.
/// </summary>
/// <remarks>
/// <para>
/// For token t, channel n and group g the exact integer <c>sum_g = sum_k u[n, k] * x[t, k] - offset[n, g] * X[t, g]</c>,
/// where <c>X[t, g]</c> is the sum of the token's activations over the group, equals <c>sum_k (q - zeroPoint) * x</c>.
/// The channel's total is <c>fma((float)sum_g, scale[n, g], total)</c> in group order, starting from 0. With codes in
/// [0, 15] and activations in [-127, 127] no path can overflow or saturate: a pair of products is at most 3,810 in
/// magnitude (what <c>vpmaddubsw</c> holds in int16), and a group's sum stays far inside int32.
/// </para>
/// <para>
/// Paths: AVX-VNNI <c>vpdpbusd</c> (codes are the unsigned operand, activations the signed one, so no offset trick is
/// needed), two tokens sharing each weight vector, over blocks of steps that stay in the L1 cache; AVX2, the same
/// kernel with <c>vpdpbusd</c> done as <c>vpmaddubsw</c> + <c>vpmaddwd</c> by ones (exact here); AVX-512BW
/// <c>vpmaddubsw</c> + <c>vpmaddwd</c>; scalar code. Every path gives the same sums, so the same float totals.
/// </para>
/// </remarks>
internal static class Int4Int8Kernel
{
    /// <summary>Steps of a panel (128 bytes each) processed for every token before moving on: 16 KiB, which stay in L1.</summary>
    private const int StepBlock = 128;

    /// <summary>Gets the fastest path this machine runs.</summary>
    public static Int8KernelPath Best =>
        IsSupported(Int8KernelPath.AvxVnni) ? Int8KernelPath.AvxVnni
        : IsSupported(Int8KernelPath.Vector512) ? Int8KernelPath.Vector512
        : IsSupported(Int8KernelPath.Vector256) ? Int8KernelPath.Vector256
        : Int8KernelPath.Scalar;

    /// <summary>Gets whether this kernel has a path and the machine runs it: AVX-VNNI, AVX-512BW, AVX2 or scalar.</summary>
    /// <param name="path">The path.</param>
    /// <returns><see langword="true"/> when the path can run.</returns>
    public static bool IsSupported(Int8KernelPath path) =>
        path is Int8KernelPath.Scalar or Int8KernelPath.AvxVnni or Int8KernelPath.Vector512 or Int8KernelPath.Vector256 && Int8KernelPaths.IsSupported(path);

    /// <summary>Sums each token's activations over each group: <c>X[t, g]</c>.</summary>
    /// <param name="weight">The packed weight (for its groups).</param>
    /// <param name="x">The quantized activations, one padded row per token.</param>
    /// <param name="tokens">The number of tokens.</param>
    /// <param name="groupSums">Receives <c>tokens x groups</c> sums.</param>
    public static void SumGroups(PackedInt4Weight weight, ReadOnlySpan<sbyte> x, int tokens, Span<int> groupSums)
    {
        int padded = weight.PaddedInFeatures;
        for (int t = 0; t < tokens; t++)
        {
            for (int g = 0; g < weight.Groups; g++)
            {
                int sum = 0;
                foreach (sbyte v in x.Slice((t * padded) + (weight.GroupStart(g) * PackedInt4Weight.StepFeatures), weight.GroupLength(g) * PackedInt4Weight.StepFeatures))
                {
                    sum += v;
                }

                groupSums[(t * weight.Groups) + g] = sum;
            }
        }
    }

    /// <summary>Computes one panel's totals (before the token scale) for any number of tokens.</summary>
    /// <param name="path">A supported path (<see cref="IsSupported"/>).</param>
    /// <param name="weight">The packed weight.</param>
    /// <param name="panel">The panel index.</param>
    /// <param name="x">The quantized activations, one padded row per token.</param>
    /// <param name="groupSums">The tokens' group sums (<see cref="SumGroups"/>).</param>
    /// <param name="tokens">The number of tokens.</param>
    /// <param name="totals">Receives 32 totals per token, token-major.</param>
    public static unsafe void Accumulate(Int8KernelPath path, PackedInt4Weight weight, int panel, ReadOnlySpan<sbyte> x, ReadOnlySpan<int> groupSums, int tokens, Span<float> totals)
    {
        Debug.Assert(IsSupported(path), "Callers choose a supported path.");
        Debug.Assert(x.Length >= tokens * weight.PaddedInFeatures && groupSums.Length >= tokens * weight.Groups, "One row and one sum per group per token.");
        Debug.Assert(totals.Length >= tokens * PackedInt4Weight.PanelRows, "32 totals per token.");
        totals[..(tokens * PackedInt4Weight.PanelRows)].Clear();
        int stride = weight.PaddedInFeatures;

        // Blocks of whole groups about StepBlock steps long, so that the block of the panel stays in L1 for every token.
        int groupsPerBlock = Math.Max(1, StepBlock / weight.GroupSteps);
        fixed (sbyte* xp = x)
        fixed (int* sp = groupSums)
        fixed (float* tp = totals)
        {
            for (int g0 = 0; g0 < weight.Groups; g0 += groupsPerBlock)
            {
                int g1 = Math.Min(weight.Groups, g0 + groupsPerBlock);
                int t = 0;
                for (; t + 2 <= tokens && path is Int8KernelPath.AvxVnni or Int8KernelPath.Vector256; t += 2)
                {
                    sbyte* xt = xp + (t * stride);
                    int* st = sp + (t * weight.Groups);
                    float* tt = tp + (t * PackedInt4Weight.PanelRows);
                    if (path == Int8KernelPath.AvxVnni)
                    {
                        TwoTokens256<VnniDot>(weight, panel, g0, g1, xt, stride, st, tt);
                    }
                    else
                    {
                        TwoTokens256<Avx2Dot>(weight, panel, g0, g1, xt, stride, st, tt);
                    }
                }

                for (; t < tokens; t++)
                {
                    sbyte* xt = xp + (t * stride);
                    int* st = sp + (t * weight.Groups);
                    float* tt = tp + (t * PackedInt4Weight.PanelRows);
                    switch (path)
                    {
                        case Int8KernelPath.AvxVnni:
                            OneToken256<VnniDot>(weight, panel, g0, g1, xt, st, tt);
                            break;
                        case Int8KernelPath.Vector256:
                            OneToken256<Avx2Dot>(weight, panel, g0, g1, xt, st, tt);
                            break;
                        case Int8KernelPath.Vector512:
                            Vector512Token(weight, panel, g0, g1, xt, st, tt);
                            break;
                        default:
                            ScalarToken(weight, panel, g0, g1, xt, st, tt);
                            break;
                    }
                }
            }
        }
    }

    /// <summary>Adds a group's exact sums of 8 channels to their totals: <c>fma((float)(sum - offset * X), scale, total)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void AddGroup256(Vector256<int> sum, ref int offsets, ref float scales, int groupSum, float* total)
    {
        Vector256<int> exact = sum - (Vector256.LoadUnsafe(ref offsets) * Vector256.Create(groupSum));
        Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(exact), Vector256.LoadUnsafe(ref scales), Vector256.Load(total)).Store(total);
    }

    /// <summary>Broadcasts four activation bytes (features 4i to 4i + 3 of a step) to every int32 lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<sbyte> Broadcast256(sbyte* x) => Vector256.Create(*(int*)x).AsSByte();

    private static unsafe void OneToken256<TDot>(PackedInt4Weight weight, int panel, int g0, int g1, sbyte* x, int* groupSums, float* totals)
        where TDot : struct, IDot256
    {
        ref uint w = ref weight.GetPanel(panel);
        int parameters = panel * weight.Groups * PackedInt4Weight.PanelRows;
        Vector256<uint> mask = Vector256.Create(0x0F0F0F0Fu);
        for (int g = g0; g < g1; g++)
        {
            Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default;
            int end = weight.GroupStart(g) + weight.GroupLength(g);
            for (int s = weight.GroupStart(g); s < end; s++)
            {
                ref uint ws = ref Unsafe.Add(ref w, s * PackedInt4Weight.PanelRows);
                Int4WeightOnlyKernel.Prefetch(ref w, s);
                Vector256<sbyte> p = Broadcast256(x + (s * PackedInt4Weight.StepFeatures));
                Vector256<sbyte> q = Broadcast256(x + (s * PackedInt4Weight.StepFeatures) + 4);
                Vector256<uint> v0 = Vector256.LoadUnsafe(ref ws), v1 = Vector256.LoadUnsafe(ref ws, 8), v2 = Vector256.LoadUnsafe(ref ws, 16), v3 = Vector256.LoadUnsafe(ref ws, 24);
                a0 = TDot.Add(a0, (v0 & mask).AsByte(), p);
                a1 = TDot.Add(a1, (v1 & mask).AsByte(), p);
                a2 = TDot.Add(a2, (v2 & mask).AsByte(), p);
                a3 = TDot.Add(a3, (v3 & mask).AsByte(), p);
                a0 = TDot.Add(a0, (Vector256.ShiftRightLogical(v0, 4) & mask).AsByte(), q);
                a1 = TDot.Add(a1, (Vector256.ShiftRightLogical(v1, 4) & mask).AsByte(), q);
                a2 = TDot.Add(a2, (Vector256.ShiftRightLogical(v2, 4) & mask).AsByte(), q);
                a3 = TDot.Add(a3, (Vector256.ShiftRightLogical(v3, 4) & mask).AsByte(), q);
            }

            int p0 = parameters + (g * PackedInt4Weight.PanelRows);
            ref int offsets = ref weight.Offsets[p0];
            ref float scales = ref weight.Scales[p0];
            AddGroup256(a0, ref offsets, ref scales, groupSums[g], totals);
            AddGroup256(a1, ref Unsafe.Add(ref offsets, 8), ref Unsafe.Add(ref scales, 8), groupSums[g], totals + 8);
            AddGroup256(a2, ref Unsafe.Add(ref offsets, 16), ref Unsafe.Add(ref scales, 16), groupSums[g], totals + 16);
            AddGroup256(a3, ref Unsafe.Add(ref offsets, 24), ref Unsafe.Add(ref scales, 24), groupSums[g], totals + 24);
        }
    }

    private static unsafe void TwoTokens256<TDot>(PackedInt4Weight weight, int panel, int g0, int g1, sbyte* x, int stride, int* groupSums, float* totals)
        where TDot : struct, IDot256
    {
        ref uint w = ref weight.GetPanel(panel);
        int parameters = panel * weight.Groups * PackedInt4Weight.PanelRows;
        int groups = weight.Groups;
        Vector256<uint> mask = Vector256.Create(0x0F0F0F0Fu);
        sbyte* y = x + stride;
        for (int g = g0; g < g1; g++)
        {
            Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector256<int> b0 = default, b1 = default, b2 = default, b3 = default;
            int end = weight.GroupStart(g) + weight.GroupLength(g);
            for (int s = weight.GroupStart(g); s < end; s++)
            {
                ref uint ws = ref Unsafe.Add(ref w, s * PackedInt4Weight.PanelRows);
                int f = s * PackedInt4Weight.StepFeatures;
                Vector256<sbyte> p = Broadcast256(x + f), q = Broadcast256(x + f + 4);
                Vector256<sbyte> r = Broadcast256(y + f), u = Broadcast256(y + f + 4);
                Vector256<uint> v = Vector256.LoadUnsafe(ref ws);
                Vector256<byte> lo = (v & mask).AsByte(), hi = (Vector256.ShiftRightLogical(v, 4) & mask).AsByte();
                a0 = TDot.Add(TDot.Add(a0, lo, p), hi, q);
                b0 = TDot.Add(TDot.Add(b0, lo, r), hi, u);
                v = Vector256.LoadUnsafe(ref ws, 8);
                lo = (v & mask).AsByte();
                hi = (Vector256.ShiftRightLogical(v, 4) & mask).AsByte();
                a1 = TDot.Add(TDot.Add(a1, lo, p), hi, q);
                b1 = TDot.Add(TDot.Add(b1, lo, r), hi, u);
                v = Vector256.LoadUnsafe(ref ws, 16);
                lo = (v & mask).AsByte();
                hi = (Vector256.ShiftRightLogical(v, 4) & mask).AsByte();
                a2 = TDot.Add(TDot.Add(a2, lo, p), hi, q);
                b2 = TDot.Add(TDot.Add(b2, lo, r), hi, u);
                v = Vector256.LoadUnsafe(ref ws, 24);
                lo = (v & mask).AsByte();
                hi = (Vector256.ShiftRightLogical(v, 4) & mask).AsByte();
                a3 = TDot.Add(TDot.Add(a3, lo, p), hi, q);
                b3 = TDot.Add(TDot.Add(b3, lo, r), hi, u);
            }

            int p0 = parameters + (g * PackedInt4Weight.PanelRows);
            ref int offsets = ref weight.Offsets[p0];
            ref float scales = ref weight.Scales[p0];
            int sx = groupSums[g], sy = groupSums[groups + g];
            float* tx = totals, ty = totals + PackedInt4Weight.PanelRows;
            AddGroup256(a0, ref offsets, ref scales, sx, tx);
            AddGroup256(a1, ref Unsafe.Add(ref offsets, 8), ref Unsafe.Add(ref scales, 8), sx, tx + 8);
            AddGroup256(a2, ref Unsafe.Add(ref offsets, 16), ref Unsafe.Add(ref scales, 16), sx, tx + 16);
            AddGroup256(a3, ref Unsafe.Add(ref offsets, 24), ref Unsafe.Add(ref scales, 24), sx, tx + 24);
            AddGroup256(b0, ref offsets, ref scales, sy, ty);
            AddGroup256(b1, ref Unsafe.Add(ref offsets, 8), ref Unsafe.Add(ref scales, 8), sy, ty + 8);
            AddGroup256(b2, ref Unsafe.Add(ref offsets, 16), ref Unsafe.Add(ref scales, 16), sy, ty + 16);
            AddGroup256(b3, ref Unsafe.Add(ref offsets, 24), ref Unsafe.Add(ref scales, 24), sy, ty + 24);
        }
    }

    /// <summary>
    /// AVX-512BW: <c>vpmaddubsw</c> sums pairs of code x activation products into int16 (at most 3,810, no saturation), the
    /// two halves of a step are added (at most 15,240) and <c>vpmaddwd</c> by ones widens the pairs into int32.
    /// </summary>
    private static unsafe void Vector512Token(PackedInt4Weight weight, int panel, int g0, int g1, sbyte* x, int* groupSums, float* totals)
    {
        ref uint w = ref weight.GetPanel(panel);
        int parameters = panel * weight.Groups * PackedInt4Weight.PanelRows;
        Vector512<uint> mask = Vector512.Create(0x0F0F0F0Fu);
        Vector512<short> ones = Vector512.Create((short)1);
        for (int g = g0; g < g1; g++)
        {
            Vector512<int> a0 = default, a1 = default;
            int end = weight.GroupStart(g) + weight.GroupLength(g);
            for (int s = weight.GroupStart(g); s < end; s++)
            {
                ref uint ws = ref Unsafe.Add(ref w, s * PackedInt4Weight.PanelRows);
                Vector512<sbyte> p = Vector512.Create(*(int*)(x + (s * PackedInt4Weight.StepFeatures))).AsSByte();
                Vector512<sbyte> q = Vector512.Create(*(int*)(x + (s * PackedInt4Weight.StepFeatures) + 4)).AsSByte();
                Vector512<uint> v0 = Vector512.LoadUnsafe(ref ws), v1 = Vector512.LoadUnsafe(ref ws, 16);
                Vector512<short> h0 = Avx512BW.MultiplyAddAdjacent((v0 & mask).AsByte(), p) + Avx512BW.MultiplyAddAdjacent((Vector512.ShiftRightLogical(v0, 4) & mask).AsByte(), q);
                Vector512<short> h1 = Avx512BW.MultiplyAddAdjacent((v1 & mask).AsByte(), p) + Avx512BW.MultiplyAddAdjacent((Vector512.ShiftRightLogical(v1, 4) & mask).AsByte(), q);
                a0 += Avx512BW.MultiplyAddAdjacent(h0, ones);
                a1 += Avx512BW.MultiplyAddAdjacent(h1, ones);
            }

            int p0 = parameters + (g * PackedInt4Weight.PanelRows);
            for (int half = 0; half < 2; half++)
            {
                Vector512<int> sum = half == 0 ? a0 : a1;
                ref int offsets = ref weight.Offsets[p0 + (16 * half)];
                Vector512<int> exact = sum - (Vector512.LoadUnsafe(ref offsets) * Vector512.Create(groupSums[g]));
                float* total = totals + (16 * half);
                Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(exact), Vector512.LoadUnsafe(ref weight.Scales[p0 + (16 * half)]), Vector512.Load(total)).Store(total);
            }
        }
    }

    private static unsafe void ScalarToken(PackedInt4Weight weight, int panel, int g0, int g1, sbyte* x, int* groupSums, float* totals)
    {
        ReadOnlySpan<uint> words = MemoryMarshal.CreateReadOnlySpan(ref weight.GetPanel(panel), weight.Steps * PackedInt4Weight.PanelRows);
        int parameters = panel * weight.Groups * PackedInt4Weight.PanelRows;
        for (int c = 0; c < PackedInt4Weight.PanelRows; c++)
        {
            for (int g = g0; g < g1; g++)
            {
                int sum = 0;
                int end = weight.GroupStart(g) + weight.GroupLength(g);
                for (int s = weight.GroupStart(g); s < end; s++)
                {
                    uint word = words[(s * PackedInt4Weight.PanelRows) + c];
                    for (int f = 0; f < PackedInt4Weight.StepFeatures; f++)
                    {
                        sum += (int)((word >> PackedInt4Weight.NibbleShift(f)) & 15) * x[(s * PackedInt4Weight.StepFeatures) + f];
                    }
                }

                int p = parameters + (g * PackedInt4Weight.PanelRows) + c;
                totals[c] = MathF.FusedMultiplyAdd(sum - (weight.Offsets[p] * groupSums[g]), weight.Scales[p], totals[c]);
            }
        }
    }

    /// <summary>
    /// <c>vpdpbusd</c> on 256 bits: adds to each int32 lane the four products of its unsigned code bytes and signed
    /// activation bytes.
    /// </summary>
    private interface IDot256
    {
        static abstract Vector256<int> Add(Vector256<int> sum, Vector256<byte> codes, Vector256<sbyte> x);
    }

    /// <summary>AVX-VNNI's own instruction.</summary>
    private readonly struct VnniDot : IDot256
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Add(Vector256<int> sum, Vector256<byte> codes, Vector256<sbyte> x) => AvxVnni.MultiplyWideningAndAdd(sum, codes, x);
    }

    /// <summary>AVX2: <c>vpmaddubsw</c> (pairs of products, at most 3,810, so no saturation) then <c>vpmaddwd</c> by ones: the same int32 sums.</summary>
    private readonly struct Avx2Dot : IDot256
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Add(Vector256<int> sum, Vector256<byte> codes, Vector256<sbyte> x) =>
            sum + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(codes, x), Vector256.Create((short)1));
    }
}
