using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The W4A16 kernel: float activations times 4-bit weights dequantized inside the dot product, for one panel of a
/// <see cref="PackedInt4Weight"/>.
/// </summary>
/// <remarks>
/// <para>
/// The order of operations, the same on every tier: each weight is dequantized as <c>(float)(u - offset) * scale</c>
/// (exactly <see cref="QuantizedTensor.Dequantize()"/>), and every channel keeps two float accumulators, one for the even
/// and one for the odd input features; feature k is added to accumulator <c>k % 2</c> with one fused multiply-add, in
/// order of k over the padded input (padding features have weight 0 and activation 0). The channel's sum is
/// <c>a0 + a1</c>.
/// </para>
/// <para>
/// A vector holds the same feature of several channels (16 at 512 bits, 8 at 256, 4 at 128), so the activation is
/// broadcast and no vector is ever reduced across lanes. At 512 bits a code becomes its float with one
/// <c>vpermps</c> from a 16-entry table (the instruction reads only the low four bits of each index). At 512 and 256 bits
/// four tokens share each dequantized weight vector (GEMM); at 512 bits a single token reads two panels at once (GEMV, see
/// <see cref="AccumulatePair"/>), with software prefetch, as the weight then streams from memory.
/// </para>
/// </remarks>
internal static class Int4WeightOnlyKernel
{
    /// <summary>Gets the most tokens one <see cref="Accumulate"/> call computes on a tier.</summary>
    /// <param name="tier">The vector tier.</param>
    /// <returns>4 for 512- and 256-bit vectors (each weight is dequantized once for the four), else 1.</returns>
    public static int MaxTokens(SimdTier tier) => tier is SimdTier.Vector512 or SimdTier.Vector256 ? 4 : 1;

    /// <summary>Computes one panel's sums for up to <see cref="MaxTokens"/> tokens.</summary>
    /// <param name="tier">The vector tier to run.</param>
    /// <param name="weight">The packed weight.</param>
    /// <param name="panel">The panel index.</param>
    /// <param name="symmetric">Whether every offset is 8 (Int4), which lets the 512-bit path read the weight from a table.</param>
    /// <param name="x">The tokens' activations, each padded to <see cref="PackedInt4Weight.PaddedInFeatures"/> with zeros.</param>
    /// <param name="tokens">The number of tokens, 1 to <see cref="MaxTokens"/>.</param>
    /// <param name="sums">Receives 32 sums per token, token-major.</param>
    public static unsafe void Accumulate(SimdTier tier, PackedInt4Weight weight, int panel, bool symmetric, ReadOnlySpan<float> x, int tokens, Span<float> sums)
    {
        Debug.Assert(tokens >= 1 && tokens <= MaxTokens(tier), "As many tokens as the tier computes together.");
        Debug.Assert(x.Length == tokens * weight.PaddedInFeatures, "One padded row per token.");
        Debug.Assert(sums.Length >= tokens * PackedInt4Weight.PanelRows, "32 sums per token.");
        fixed (float* xp = x)
        fixed (float* s = sums)
        {
            switch (tier)
            {
                case SimdTier.Vector512 when tokens == 4 && symmetric:
                    Vector512FourTokens<SymmetricCodes>(weight, panel, xp, s);
                    break;
                case SimdTier.Vector512 when tokens == 4:
                    Vector512FourTokens<AsymmetricCodes>(weight, panel, xp, s);
                    break;
                case SimdTier.Vector512:
                    for (int t = 0; t < tokens; t++)
                    {
                        float* st = s + (t * PackedInt4Weight.PanelRows);
                        TwoPanels(symmetric, weight, panel, panel, xp + (t * weight.PaddedInFeatures), st, st);
                    }

                    break;
                case SimdTier.Vector256 when tokens == 4:
                    Vector256FourTokens(weight, panel, xp, s);
                    break;
                case SimdTier.Vector256:
                    for (int t = 0; t < tokens; t++)
                    {
                        Vector256Token(weight, panel, xp + (t * weight.PaddedInFeatures), s + (t * PackedInt4Weight.PanelRows));
                    }

                    break;
                case SimdTier.Vector128:
                    Vector128Token(weight, panel, xp, s);
                    break;
                default:
                    ScalarToken(weight, panel, xp, s);
                    break;
            }
        }
    }

    /// <summary>
    /// Computes one token's sums for two panels at once on the 512-bit tier: the GEMV path, two streams from memory.
    /// </summary>
    /// <param name="weight">The packed weight.</param>
    /// <param name="panel">The first panel.</param>
    /// <param name="other">The second panel (may equal the first).</param>
    /// <param name="symmetric">Whether every offset is 8.</param>
    /// <param name="x">The token's activations, padded to <see cref="PackedInt4Weight.PaddedInFeatures"/> with zeros.</param>
    /// <param name="sums">Receives the 32 sums of <paramref name="panel"/>, then the 32 of <paramref name="other"/>.</param>
    public static unsafe void AccumulatePair(PackedInt4Weight weight, int panel, int other, bool symmetric, ReadOnlySpan<float> x, Span<float> sums)
    {
        Debug.Assert(x.Length == weight.PaddedInFeatures && sums.Length >= 2 * PackedInt4Weight.PanelRows, "One padded token, 64 sums.");
        fixed (float* xp = x)
        fixed (float* s = sums)
        {
            TwoPanels(symmetric, weight, panel, other, xp, s, s + PackedInt4Weight.PanelRows);
        }
    }

    private static unsafe void TwoPanels(bool symmetric, PackedInt4Weight weight, int panel, int other, float* x, float* sums, float* otherSums)
    {
        if (symmetric)
        {
            Vector512TwoPanels<SymmetricCodes>(weight, panel, other, x, sums, otherSums);
        }
        else
        {
            Vector512TwoPanels<AsymmetricCodes>(weight, panel, other, x, sums, otherSums);
        }
    }

    /// <summary>Steps ahead of the one being computed whose two cache lines are prefetched.</summary>
    private const int PrefetchSteps = 16;

    /// <summary>
    /// Asks for the cache lines of a later step of the panel (prefetches never fault, past the end included): a GEMV reads
    /// each weight once, from memory, and the hardware prefetcher alone keeps too few lines in flight.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Prefetch(ref uint w, int step)
    {
        byte* line = (byte*)Unsafe.AsPointer(ref Unsafe.Add(ref w, (step + PrefetchSteps) * PackedInt4Weight.PanelRows));
        Sse.Prefetch0(line);
        Sse.Prefetch0(line + 64);
    }

    /// <summary>Asks for the 32 scales (two cache lines) of the group <see cref="PrefetchSteps"/> / 2 ahead, the scales' stream.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void PrefetchScales(ref float scales, int group)
    {
        byte* line = (byte*)Unsafe.AsPointer(ref Unsafe.Add(ref scales, (group + (PrefetchSteps / 2)) * PackedInt4Weight.PanelRows));
        Sse.Prefetch0(line);
        Sse.Prefetch0(line + 64);
    }

    /// <summary>The table <c>vpermps</c> reads: code u to <c>u - 8</c>, the Int4 value.</summary>
    private static Vector512<float> SignedTable => Vector512.Create(-8f, -7f, -6f, -5f, -4f, -3f, -2f, -1f, 0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f);

    /// <summary>Dequantizes feature <paramref name="shift"/> of 16 channels' words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dequantize512<TCodes>(Vector512<uint> words, [ConstantExpected] byte shift, Vector512<float> table, Vector512<int> offset, Vector512<float> scale)
        where TCodes : struct, ICodes
    {
        Vector512<uint> shifted = Vector512.ShiftRightLogical(words, shift);
        Vector512<float> value = TCodes.Symmetric
            ? Avx512F.PermuteVar16x32(table, shifted.AsInt32())
            : Vector512.ConvertToSingle((shifted & Vector512.Create(15u)).AsInt32() - offset);
        return value * scale;
    }

    /// <summary>
    /// One token and two panels at once (<paramref name="panel"/> into <paramref name="sums"/>, <paramref name="other"/>
    /// into <paramref name="otherSums"/>): eight independent accumulator chains and two streams from memory, which a GEMV
    /// needs to keep enough of the weight in flight. A single panel is computed as a pair with itself.
    /// </summary>
    private static unsafe void Vector512TwoPanels<TCodes>(PackedInt4Weight weight, int panel, int other, float* x, float* sums, float* otherSums)
        where TCodes : struct, ICodes
    {
        ref uint w = ref weight.GetPanel(panel);
        ref uint u = ref weight.GetPanel(other);
        int parametersPerPanel = weight.Groups * PackedInt4Weight.PanelRows;
        ref float scales = ref weight.Scales[panel * parametersPerPanel];
        ref float otherScales = ref weight.Scales[other * parametersPerPanel];
        ref int offsets = ref weight.Offsets[panel * parametersPerPanel];
        ref int otherOffsets = ref weight.Offsets[other * parametersPerPanel];
        Vector512<float> table = SignedTable;
        Four<int> o = default;
        Four<float> sc = default, even = default, odd = default;
        for (int g = 0; g < weight.Groups; g++)
        {
            nuint p = (nuint)(g * PackedInt4Weight.PanelRows);
            PrefetchScales(ref scales, g);
            PrefetchScales(ref otherScales, g);
            sc = new(Vector512.LoadUnsafe(ref scales, p), Vector512.LoadUnsafe(ref scales, p + 16), Vector512.LoadUnsafe(ref otherScales, p), Vector512.LoadUnsafe(ref otherScales, p + 16));
            if (!TCodes.Symmetric)
            {
                o = new(Vector512.LoadUnsafe(ref offsets, p), Vector512.LoadUnsafe(ref offsets, p + 16), Vector512.LoadUnsafe(ref otherOffsets, p), Vector512.LoadUnsafe(ref otherOffsets, p + 16));
            }

            int end = weight.GroupStart(g) + weight.GroupLength(g);
            for (int s = weight.GroupStart(g); s < end; s++)
            {
                Prefetch(ref w, s);
                Prefetch(ref u, s);
                nuint at = (nuint)(s * PackedInt4Weight.PanelRows);
                Four<uint> v = new(Vector512.LoadUnsafe(ref w, at), Vector512.LoadUnsafe(ref w, at + 16), Vector512.LoadUnsafe(ref u, at), Vector512.LoadUnsafe(ref u, at + 16));
                float* xs = x + (s * PackedInt4Weight.StepFeatures);
                Feature<TCodes>(v, 0, table, o, sc, xs[0], ref even);
                Feature<TCodes>(v, 8, table, o, sc, xs[1], ref odd);
                Feature<TCodes>(v, 16, table, o, sc, xs[2], ref even);
                Feature<TCodes>(v, 24, table, o, sc, xs[3], ref odd);
                Feature<TCodes>(v, 4, table, o, sc, xs[4], ref even);
                Feature<TCodes>(v, 12, table, o, sc, xs[5], ref odd);
                Feature<TCodes>(v, 20, table, o, sc, xs[6], ref even);
                Feature<TCodes>(v, 28, table, o, sc, xs[7], ref odd);
            }
        }

        (even.A + odd.A).Store(sums);
        (even.B + odd.B).Store(sums + 16);
        (even.C + odd.C).Store(otherSums);
        (even.D + odd.D).Store(otherSums + 16);
    }

    /// <summary>One feature of the two-panel kernel: four vectors of 16 channels dequantized and added to their accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Feature<TCodes>(Four<uint> v, [ConstantExpected] byte shift, Vector512<float> table, Four<int> o, Four<float> sc, float x, ref Four<float> a)
        where TCodes : struct, ICodes
    {
        Vector512<float> p = Vector512.Create(x);
        a.A = Vector512.FusedMultiplyAdd(Dequantize512<TCodes>(v.A, shift, table, o.A, sc.A), p, a.A);
        a.B = Vector512.FusedMultiplyAdd(Dequantize512<TCodes>(v.B, shift, table, o.B, sc.B), p, a.B);
        a.C = Vector512.FusedMultiplyAdd(Dequantize512<TCodes>(v.C, shift, table, o.C, sc.C), p, a.C);
        a.D = Vector512.FusedMultiplyAdd(Dequantize512<TCodes>(v.D, shift, table, o.D, sc.D), p, a.D);
    }

    /// <summary>One feature of the four-token kernel: the two dequantized vectors feed each token's even or odd accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void FourTokens(Vector512<float> w0, Vector512<float> w1, float* x, int stride, ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> b0, ref Vector512<float> b1, ref Vector512<float> c0, ref Vector512<float> c1, ref Vector512<float> d0, ref Vector512<float> d1)
    {
        Vector512<float> p = Vector512.Create(x[0]);
        a0 = Vector512.FusedMultiplyAdd(w0, p, a0);
        a1 = Vector512.FusedMultiplyAdd(w1, p, a1);
        Vector512<float> q = Vector512.Create(x[stride]);
        b0 = Vector512.FusedMultiplyAdd(w0, q, b0);
        b1 = Vector512.FusedMultiplyAdd(w1, q, b1);
        Vector512<float> r = Vector512.Create(x[2 * stride]);
        c0 = Vector512.FusedMultiplyAdd(w0, r, c0);
        c1 = Vector512.FusedMultiplyAdd(w1, r, c1);
        Vector512<float> u = Vector512.Create(x[3 * stride]);
        d0 = Vector512.FusedMultiplyAdd(w0, u, d0);
        d1 = Vector512.FusedMultiplyAdd(w1, u, d1);
    }

    private static unsafe void Vector512FourTokens<TCodes>(PackedInt4Weight weight, int panel, float* x, float* sums)
        where TCodes : struct, ICodes
    {
        ref uint w = ref weight.GetPanel(panel);
        ref float scales = ref weight.Scales[panel * weight.Groups * PackedInt4Weight.PanelRows];
        ref int offsets = ref weight.Offsets[panel * weight.Groups * PackedInt4Weight.PanelRows];
        int stride = weight.PaddedInFeatures;
        Vector512<float> table = SignedTable;
        Vector512<int> o0 = default, o1 = default;

        // Even (a-d) and odd (e-h) accumulators of tokens 0-3, for channels 0-15 (suffix 0) and 16-31 (suffix 1).
        Vector512<float> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default, d0 = default, d1 = default;
        Vector512<float> e0 = default, e1 = default, f0 = default, f1 = default, g0 = default, g1 = default, h0 = default, h1 = default;
        for (int g = 0; g < weight.Groups; g++)
        {
            Vector512<float> s0 = Vector512.LoadUnsafe(ref scales, (nuint)(g * PackedInt4Weight.PanelRows));
            Vector512<float> s1 = Vector512.LoadUnsafe(ref scales, (nuint)((g * PackedInt4Weight.PanelRows) + 16));
            if (!TCodes.Symmetric)
            {
                o0 = Vector512.LoadUnsafe(ref offsets, (nuint)(g * PackedInt4Weight.PanelRows));
                o1 = Vector512.LoadUnsafe(ref offsets, (nuint)((g * PackedInt4Weight.PanelRows) + 16));
            }

            int end = weight.GroupStart(g) + weight.GroupLength(g);
            for (int s = weight.GroupStart(g); s < end; s++)
            {
                Vector512<uint> v0 = Vector512.LoadUnsafe(ref w, (nuint)(s * PackedInt4Weight.PanelRows));
                Vector512<uint> v1 = Vector512.LoadUnsafe(ref w, (nuint)((s * PackedInt4Weight.PanelRows) + 16));
                float* xs = x + (s * PackedInt4Weight.StepFeatures);
                FourTokens(Dequantize512<TCodes>(v0, 0, table, o0, s0), Dequantize512<TCodes>(v1, 0, table, o1, s1), xs, stride, ref a0, ref a1, ref b0, ref b1, ref c0, ref c1, ref d0, ref d1);
                FourTokens(Dequantize512<TCodes>(v0, 8, table, o0, s0), Dequantize512<TCodes>(v1, 8, table, o1, s1), xs + 1, stride, ref e0, ref e1, ref f0, ref f1, ref g0, ref g1, ref h0, ref h1);
                FourTokens(Dequantize512<TCodes>(v0, 16, table, o0, s0), Dequantize512<TCodes>(v1, 16, table, o1, s1), xs + 2, stride, ref a0, ref a1, ref b0, ref b1, ref c0, ref c1, ref d0, ref d1);
                FourTokens(Dequantize512<TCodes>(v0, 24, table, o0, s0), Dequantize512<TCodes>(v1, 24, table, o1, s1), xs + 3, stride, ref e0, ref e1, ref f0, ref f1, ref g0, ref g1, ref h0, ref h1);
                FourTokens(Dequantize512<TCodes>(v0, 4, table, o0, s0), Dequantize512<TCodes>(v1, 4, table, o1, s1), xs + 4, stride, ref a0, ref a1, ref b0, ref b1, ref c0, ref c1, ref d0, ref d1);
                FourTokens(Dequantize512<TCodes>(v0, 12, table, o0, s0), Dequantize512<TCodes>(v1, 12, table, o1, s1), xs + 5, stride, ref e0, ref e1, ref f0, ref f1, ref g0, ref g1, ref h0, ref h1);
                FourTokens(Dequantize512<TCodes>(v0, 20, table, o0, s0), Dequantize512<TCodes>(v1, 20, table, o1, s1), xs + 6, stride, ref a0, ref a1, ref b0, ref b1, ref c0, ref c1, ref d0, ref d1);
                FourTokens(Dequantize512<TCodes>(v0, 28, table, o0, s0), Dequantize512<TCodes>(v1, 28, table, o1, s1), xs + 7, stride, ref e0, ref e1, ref f0, ref f1, ref g0, ref g1, ref h0, ref h1);
            }
        }

        (a0 + e0).Store(sums);
        (a1 + e1).Store(sums + 16);
        (b0 + f0).Store(sums + 32);
        (b1 + f1).Store(sums + 48);
        (c0 + g0).Store(sums + 64);
        (c1 + g1).Store(sums + 80);
        (d0 + h0).Store(sums + 96);
        (d1 + h1).Store(sums + 112);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Dequantize256(Vector256<uint> words, [ConstantExpected] byte shift, Vector256<int> offset, Vector256<float> scale) =>
        Vector256.ConvertToSingle((Vector256.ShiftRightLogical(words, shift) & Vector256.Create(15u)).AsInt32() - offset) * scale;

    /// <summary>
    /// Four tokens on the 256-bit tier: four passes of 8 channels, each dequantized weight vector feeding the even or odd
    /// accumulators of the four tokens (eight accumulators, so that the sixteen registers of AVX2 hold the pass).
    /// </summary>
    private static unsafe void Vector256FourTokens(PackedInt4Weight weight, int panel, float* x, float* sums)
    {
        const int ChannelsPerPass = 8;
        int stride = weight.PaddedInFeatures;
        for (int first = 0; first < PackedInt4Weight.PanelRows; first += ChannelsPerPass)
        {
            ref uint w = ref Unsafe.Add(ref weight.GetPanel(panel), first);
            ref float scales = ref weight.Scales[(panel * weight.Groups * PackedInt4Weight.PanelRows) + first];
            ref int offsets = ref weight.Offsets[(panel * weight.Groups * PackedInt4Weight.PanelRows) + first];
            Vector256<float> a = default, b = default, c = default, d = default, e = default, f = default, g = default, h = default;
            for (int group = 0; group < weight.Groups; group++)
            {
                Vector256<float> sc = Vector256.LoadUnsafe(ref scales, (nuint)(group * PackedInt4Weight.PanelRows));
                Vector256<int> o = Vector256.LoadUnsafe(ref offsets, (nuint)(group * PackedInt4Weight.PanelRows));
                int end = weight.GroupStart(group) + weight.GroupLength(group);
                for (int s = weight.GroupStart(group); s < end; s++)
                {
                    Vector256<uint> v = Vector256.LoadUnsafe(ref w, (nuint)(s * PackedInt4Weight.PanelRows));
                    float* xs = x + (s * PackedInt4Weight.StepFeatures);
                    FourTokens256(Dequantize256(v, 0, o, sc), xs, stride, ref a, ref b, ref c, ref d);
                    FourTokens256(Dequantize256(v, 8, o, sc), xs + 1, stride, ref e, ref f, ref g, ref h);
                    FourTokens256(Dequantize256(v, 16, o, sc), xs + 2, stride, ref a, ref b, ref c, ref d);
                    FourTokens256(Dequantize256(v, 24, o, sc), xs + 3, stride, ref e, ref f, ref g, ref h);
                    FourTokens256(Dequantize256(v, 4, o, sc), xs + 4, stride, ref a, ref b, ref c, ref d);
                    FourTokens256(Dequantize256(v, 12, o, sc), xs + 5, stride, ref e, ref f, ref g, ref h);
                    FourTokens256(Dequantize256(v, 20, o, sc), xs + 6, stride, ref a, ref b, ref c, ref d);
                    FourTokens256(Dequantize256(v, 28, o, sc), xs + 7, stride, ref e, ref f, ref g, ref h);
                }
            }

            (a + e).Store(sums + first);
            (b + f).Store(sums + PackedInt4Weight.PanelRows + first);
            (c + g).Store(sums + (2 * PackedInt4Weight.PanelRows) + first);
            (d + h).Store(sums + (3 * PackedInt4Weight.PanelRows) + first);
        }
    }

    /// <summary>One feature of the 256-bit four-token kernel: the dequantized vector added to one accumulator of each token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void FourTokens256(Vector256<float> w, float* x, int stride, ref Vector256<float> a, ref Vector256<float> b, ref Vector256<float> c, ref Vector256<float> d)
    {
        a = Vector256.FusedMultiplyAdd(w, Vector256.Create(x[0]), a);
        b = Vector256.FusedMultiplyAdd(w, Vector256.Create(x[stride]), b);
        c = Vector256.FusedMultiplyAdd(w, Vector256.Create(x[2 * stride]), c);
        d = Vector256.FusedMultiplyAdd(w, Vector256.Create(x[3 * stride]), d);
    }

    /// <summary>One token: two passes of 16 channels (two vectors, four accumulators).</summary>
    private static unsafe void Vector256Token(PackedInt4Weight weight, int panel, float* x, float* sums)
    {
        const int ChannelsPerPass = 16;
        for (int first = 0; first < PackedInt4Weight.PanelRows; first += ChannelsPerPass)
        {
            ref uint w = ref Unsafe.Add(ref weight.GetPanel(panel), first);
            ref float scales = ref weight.Scales[(panel * weight.Groups * PackedInt4Weight.PanelRows) + first];
            ref int offsets = ref weight.Offsets[(panel * weight.Groups * PackedInt4Weight.PanelRows) + first];
            Vector256<float> e0 = default, d0 = default, e1 = default, d1 = default;
            for (int g = 0; g < weight.Groups; g++)
            {
                nuint p = (nuint)(g * PackedInt4Weight.PanelRows);
                Vector256<float> s0 = Vector256.LoadUnsafe(ref scales, p), s1 = Vector256.LoadUnsafe(ref scales, p + 8);
                Vector256<int> o0 = Vector256.LoadUnsafe(ref offsets, p), o1 = Vector256.LoadUnsafe(ref offsets, p + 8);
                int end = weight.GroupStart(g) + weight.GroupLength(g);
                for (int s = weight.GroupStart(g); s < end; s++)
                {
                    Vector256<uint> v0 = Vector256.LoadUnsafe(ref w, (nuint)(s * PackedInt4Weight.PanelRows));
                    Vector256<uint> v1 = Vector256.LoadUnsafe(ref w, (nuint)((s * PackedInt4Weight.PanelRows) + 8));
                    float* xs = x + (s * PackedInt4Weight.StepFeatures);
                    e0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 0, o0, s0), Vector256.Create(xs[0]), e0);
                    e1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 0, o1, s1), Vector256.Create(xs[0]), e1);
                    d0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 8, o0, s0), Vector256.Create(xs[1]), d0);
                    d1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 8, o1, s1), Vector256.Create(xs[1]), d1);
                    e0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 16, o0, s0), Vector256.Create(xs[2]), e0);
                    e1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 16, o1, s1), Vector256.Create(xs[2]), e1);
                    d0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 24, o0, s0), Vector256.Create(xs[3]), d0);
                    d1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 24, o1, s1), Vector256.Create(xs[3]), d1);
                    e0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 4, o0, s0), Vector256.Create(xs[4]), e0);
                    e1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 4, o1, s1), Vector256.Create(xs[4]), e1);
                    d0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 12, o0, s0), Vector256.Create(xs[5]), d0);
                    d1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 12, o1, s1), Vector256.Create(xs[5]), d1);
                    e0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 20, o0, s0), Vector256.Create(xs[6]), e0);
                    e1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 20, o1, s1), Vector256.Create(xs[6]), e1);
                    d0 = Vector256.FusedMultiplyAdd(Dequantize256(v0, 28, o0, s0), Vector256.Create(xs[7]), d0);
                    d1 = Vector256.FusedMultiplyAdd(Dequantize256(v1, 28, o1, s1), Vector256.Create(xs[7]), d1);
                }
            }

            (e0 + d0).Store(sums + first);
            (e1 + d1).Store(sums + first + 8);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Dequantize128(Vector128<uint> words, [ConstantExpected] byte shift, Vector128<int> offset, Vector128<float> scale) =>
        Vector128.ConvertToSingle((Vector128.ShiftRightLogical(words, shift) & Vector128.Create(15u)).AsInt32() - offset) * scale;

    /// <summary>Portable: eight passes of 4 channels (one vector, two accumulators).</summary>
    private static unsafe void Vector128Token(PackedInt4Weight weight, int panel, float* x, float* sums)
    {
        const int ChannelsPerPass = 4;
        for (int first = 0; first < PackedInt4Weight.PanelRows; first += ChannelsPerPass)
        {
            ref uint w = ref Unsafe.Add(ref weight.GetPanel(panel), first);
            ref float scales = ref weight.Scales[(panel * weight.Groups * PackedInt4Weight.PanelRows) + first];
            ref int offsets = ref weight.Offsets[(panel * weight.Groups * PackedInt4Weight.PanelRows) + first];
            Vector128<float> e = default, d = default;
            for (int g = 0; g < weight.Groups; g++)
            {
                Vector128<float> sc = Vector128.LoadUnsafe(ref scales, (nuint)(g * PackedInt4Weight.PanelRows));
                Vector128<int> o = Vector128.LoadUnsafe(ref offsets, (nuint)(g * PackedInt4Weight.PanelRows));
                int end = weight.GroupStart(g) + weight.GroupLength(g);
                for (int s = weight.GroupStart(g); s < end; s++)
                {
                    Vector128<uint> v = Vector128.LoadUnsafe(ref w, (nuint)(s * PackedInt4Weight.PanelRows));
                    float* xs = x + (s * PackedInt4Weight.StepFeatures);
                    e = Vector128.FusedMultiplyAdd(Dequantize128(v, 0, o, sc), Vector128.Create(xs[0]), e);
                    d = Vector128.FusedMultiplyAdd(Dequantize128(v, 8, o, sc), Vector128.Create(xs[1]), d);
                    e = Vector128.FusedMultiplyAdd(Dequantize128(v, 16, o, sc), Vector128.Create(xs[2]), e);
                    d = Vector128.FusedMultiplyAdd(Dequantize128(v, 24, o, sc), Vector128.Create(xs[3]), d);
                    e = Vector128.FusedMultiplyAdd(Dequantize128(v, 4, o, sc), Vector128.Create(xs[4]), e);
                    d = Vector128.FusedMultiplyAdd(Dequantize128(v, 12, o, sc), Vector128.Create(xs[5]), d);
                    e = Vector128.FusedMultiplyAdd(Dequantize128(v, 20, o, sc), Vector128.Create(xs[6]), e);
                    d = Vector128.FusedMultiplyAdd(Dequantize128(v, 28, o, sc), Vector128.Create(xs[7]), d);
                }
            }

            (e + d).Store(sums + first);
        }
    }

    private static unsafe void ScalarToken(PackedInt4Weight weight, int panel, float* x, float* sums)
    {
        ReadOnlySpan<uint> words = MemoryMarshal.CreateReadOnlySpan(ref weight.GetPanel(panel), weight.Steps * PackedInt4Weight.PanelRows);
        int parameters = panel * weight.Groups * PackedInt4Weight.PanelRows;
        for (int c = 0; c < PackedInt4Weight.PanelRows; c++)
        {
            float even = 0, odd = 0;
            for (int g = 0; g < weight.Groups; g++)
            {
                float scale = weight.Scales[parameters + (g * PackedInt4Weight.PanelRows) + c];
                int offset = weight.Offsets[parameters + (g * PackedInt4Weight.PanelRows) + c];
                int end = weight.GroupStart(g) + weight.GroupLength(g);
                for (int s = weight.GroupStart(g); s < end; s++)
                {
                    uint word = words[(s * PackedInt4Weight.PanelRows) + c];
                    for (int f = 0; f < PackedInt4Weight.StepFeatures; f += 2)
                    {
                        even = MathF.FusedMultiplyAdd((float)((int)((word >> PackedInt4Weight.NibbleShift(f)) & 15) - offset) * scale, x[(s * PackedInt4Weight.StepFeatures) + f], even);
                        odd = MathF.FusedMultiplyAdd((float)((int)((word >> PackedInt4Weight.NibbleShift(f + 1)) & 15) - offset) * scale, x[(s * PackedInt4Weight.StepFeatures) + f + 1], odd);
                    }
                }
            }

            sums[c] = even + odd;
        }
    }

    /// <summary>Four 512-bit vectors: 64 channels of two panels, handled as one value so that helpers take them together.</summary>
    private struct Four<T>(Vector512<T> a, Vector512<T> b, Vector512<T> c, Vector512<T> d)
    {
        public Vector512<T> A = a;
        public Vector512<T> B = b;
        public Vector512<T> C = c;
        public Vector512<T> D = d;
    }

    /// <summary>Whether a weight's codes all have offset 8 (Int4), chosen at compile time per instantiation.</summary>
    private interface ICodes
    {
        static abstract bool Symmetric { get; }
    }

    private readonly struct SymmetricCodes : ICodes
    {
        public static bool Symmetric => true;
    }

    private readonly struct AsymmetricCodes : ICodes
    {
        public static bool Symmetric => false;
    }
}
