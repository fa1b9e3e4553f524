using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

internal static partial class AttentionPrimitives
{
    /// <summary>
    /// Computes the scores of int16 query heads against a block of int8 keys stored in channel pairs:
    /// <c>scores[j * scoreStride + t] = (float)dot(keys[t], queries[j]) * factors[j] (* tokenScales[t])</c>, where the
    /// dot is the exact int32 sum of <c>keys[t, d] * queries[j, d]</c>.
    /// </summary>
    /// <param name="keys">
    /// One KV head's keys of a block in pair layout, [pairs, <paramref name="keyStride"/>, 2]: channels 2p and 2p + 1 of token t
    /// are the two bytes at <c>(p * keyStride + t) * 2</c>. A vector of lanes then holds one channel pair of consecutive
    /// tokens, so a multiply-add of adjacent int16 products (<c>vpmaddwd</c>) against the query's pair gives each token's
    /// partial dot in its own lane: no horizontal reduction per token.
    /// </param>
    /// <param name="keyStride">The tokens a pair row holds (the block's capacity); tokens past <paramref name="tokens"/> are never read.</param>
    /// <param name="tokens">The tokens to score.</param>
    /// <param name="queries">The quantized query heads, [heads, pairs * 2] (an odd head dim padded with a zero).</param>
    /// <param name="factors">The factor of each query head (its quantization scale over sqrt(head dim)).</param>
    /// <param name="tokenScales">The per-token key scales, or empty.</param>
    /// <param name="scores">Receives the scores.</param>
    /// <param name="scoreStride">The distance between two heads' scores.</param>
    /// <remarks>
    /// The int32 dots are exact, and each score is the same two (three) rounded float multiplications on every path, so
    /// every SIMD tier gives the same bits. Query heads are taken four at a time, so one widening of the keys serves four heads.
    /// </remarks>
    public static void KeyScores(ReadOnlySpan<sbyte> keys, int keyStride, int tokens, ReadOnlySpan<short> queries, ReadOnlySpan<float> factors, ReadOnlySpan<float> tokenScales, Span<float> scores, int scoreStride)
    {
        int heads = factors.Length, pairs = queries.Length / Math.Max(1, 2 * heads);
        Debug.Assert(queries.Length == heads * pairs * 2 && pairs * 2 <= MaxHeadDim + 1, "Whole padded query heads; the int32 dots stay exact.");
        Debug.Assert(tokens <= keyStride && keys.Length >= ((pairs - 1) * keyStride * 2) + (tokens * 2), "Whole pair rows.");
        Debug.Assert(tokenScales.IsEmpty || tokenScales.Length >= tokens, "A scale per token.");
        Debug.Assert(heads == 0 || scores.Length >= ((heads - 1) * scoreStride) + tokens, "A score per head and token.");
        ref sbyte key0 = ref MemoryMarshal.GetReference(keys);
        ref int query0 = ref Unsafe.As<short, int>(ref MemoryMarshal.GetReference(queries));
        ref float scale0 = ref MemoryMarshal.GetReference(tokenScales);
        ref float score0 = ref MemoryMarshal.GetReference(scores);
        PairLayout layout = new((nuint)pairs, (nuint)keyStride, (nuint)scoreStride, !tokenScales.IsEmpty);
        for (int j = 0; j < heads; j += 4)
        {
            int count = Math.Min(4, heads - j);
            ref int q = ref Unsafe.Add(ref query0, (nuint)j * (nuint)pairs);
            ref float s = ref Unsafe.Add(ref score0, (nuint)j * (nuint)scoreStride);
            ReadOnlySpan<float> f = factors.Slice(j, count);
            int t = 0;
            t = KeyScores<Vector512<short>, Vector512<int>, PairDot512>(ref key0, ref q, f, ref scale0, ref s, layout, t, tokens);
            t = KeyScores<Vector256<short>, Vector256<int>, PairDot256>(ref key0, ref q, f, ref scale0, ref s, layout, t, tokens);
            t = KeyScores<Vector128<short>, Vector128<int>, PairDot128>(ref key0, ref q, f, ref scale0, ref s, layout, t, tokens);
            KeyScores<int, int, PairDotScalar>(ref key0, ref q, f, ref scale0, ref s, layout, t, tokens);
        }
    }

    /// <summary>
    /// Scores runs of <typeparamref name="TOp"/>.Count tokens from <paramref name="start"/> for up to four query heads;
    /// returns where it stopped (the tokens left are fewer than a run, or the tier is not supported).
    /// </summary>
    private static int KeyScores<TWide, TAcc, TOp>(ref sbyte keys, ref int queries, ReadOnlySpan<float> factors, ref float tokenScales, ref float scores, in PairLayout layout, int start, int tokens)
        where TOp : IPairDotOperator<TWide, TAcc>
    {
        if (!TOp.IsSupported)
        {
            return start;
        }

        nuint pairs = layout.Pairs, stride = layout.KeyStride;
        int heads = factors.Length, t = start;
        for (; t + TOp.Count <= tokens; t += TOp.Count)
        {
            ref sbyte run = ref Unsafe.Add(ref keys, (nuint)t * 2);
            if (heads == 4)
            {
                ref int qb = ref Unsafe.Add(ref queries, pairs);
                ref int qc = ref Unsafe.Add(ref qb, pairs);
                ref int qd = ref Unsafe.Add(ref qc, pairs);
                TAcc a = TOp.Zero, b = TOp.Zero, c = TOp.Zero, d = TOp.Zero;
                for (nuint p = 0; p < pairs; p++)
                {
                    TWide k = TOp.Widen(ref run, p * stride * 2);
                    a = TOp.MultiplyAdd(a, k, Unsafe.Add(ref queries, p));
                    b = TOp.MultiplyAdd(b, k, Unsafe.Add(ref qb, p));
                    c = TOp.MultiplyAdd(c, k, Unsafe.Add(ref qc, p));
                    d = TOp.MultiplyAdd(d, k, Unsafe.Add(ref qd, p));
                }

                TOp.Store(a, factors[0], ref tokenScales, layout.PerToken, ref scores, (nuint)t);
                TOp.Store(b, factors[1], ref tokenScales, layout.PerToken, ref Unsafe.Add(ref scores, layout.ScoreStride), (nuint)t);
                TOp.Store(c, factors[2], ref tokenScales, layout.PerToken, ref Unsafe.Add(ref scores, 2 * layout.ScoreStride), (nuint)t);
                TOp.Store(d, factors[3], ref tokenScales, layout.PerToken, ref Unsafe.Add(ref scores, 3 * layout.ScoreStride), (nuint)t);
                continue;
            }

            for (int j = 0; j < heads; j++)
            {
                ref int q = ref Unsafe.Add(ref queries, (nuint)j * pairs);
                TAcc a = TOp.Zero;
                for (nuint p = 0; p < pairs; p++)
                {
                    a = TOp.MultiplyAdd(a, TOp.Widen(ref run, p * stride * 2), Unsafe.Add(ref q, p));
                }

                TOp.Store(a, factors[j], ref tokenScales, layout.PerToken, ref Unsafe.Add(ref scores, (nuint)j * layout.ScoreStride), (nuint)t);
            }
        }

        return t;
    }

    /// <summary>The strides of a pair-layout key block and its scores.</summary>
    private readonly record struct PairLayout(nuint Pairs, nuint KeyStride, nuint ScoreStride, bool PerToken);
}

/// <summary>
/// <see cref="Count"/> tokens' partial dots of one channel pair: widen their 2 x Count key bytes to int16 once
/// (<see cref="Widen"/>), then for each query head multiply by its pair (two int16 in an int32, broadcast) and add
/// adjacent products into each token's int32 lane (<see cref="MultiplyAdd"/>). The drivers in
/// <see cref="AttentionPrimitives"/> hold the loops, so every tier runs the same body.
/// </summary>
/// <typeparam name="TWide">The widened keys of one step: Count int16 pairs.</typeparam>
/// <typeparam name="TAcc">The int32 lanes, one per token.</typeparam>
internal interface IPairDotOperator<TWide, TAcc>
{
    static abstract int Count { get; }

    static abstract bool IsSupported { get; }

    static abstract TAcc Zero { get; }

    /// <summary>The Count pairs that start at <c>keys[offset]</c>, widened to int16.</summary>
    static abstract TWide Widen(ref sbyte keys, nuint offset);

    /// <summary>acc += the pair dots of widened keys with one query pair.</summary>
    static abstract TAcc MultiplyAdd(TAcc acc, TWide keys, int queryPair);

    /// <summary>scores[t + i] = (float)acc[i] * factor (* tokenScales[t + i]).</summary>
    static abstract void Store(TAcc acc, float factor, ref float tokenScales, bool perToken, ref float scores, nuint t);
}

// vpmovsxbw widens the key bytes and vpmaddwd multiplies int16 pairs and adds them into int32 lanes in one instruction;
// the portable Vector API has neither (it would widen twice and multiply int32 lanes). A wide store is two stores of
// its halves: the same per-lane operations, and it runs once per run of tokens, not per pair.

/// <summary>16 tokens a step (AVX-512BW).</summary>
internal readonly struct PairDot512 : IPairDotOperator<Vector512<short>, Vector512<int>>
{
    public static int Count => 16;

    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512BW.IsSupported;

    public static Vector512<int> Zero => Vector512<int>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<short> Widen(ref sbyte keys, nuint offset) => Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref keys, offset));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> MultiplyAdd(Vector512<int> acc, Vector512<short> keys, int queryPair) =>
        acc + Avx512BW.MultiplyAddAdjacent(keys, Vector512.Create(queryPair).AsInt16());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<int> acc, float factor, ref float tokenScales, bool perToken, ref float scores, nuint t)
    {
        PairDot256.Store(acc.GetLower(), factor, ref tokenScales, perToken, ref scores, t);
        PairDot256.Store(acc.GetUpper(), factor, ref tokenScales, perToken, ref scores, t + 8);
    }
}

/// <summary>8 tokens a step (AVX2).</summary>
internal readonly struct PairDot256 : IPairDotOperator<Vector256<short>, Vector256<int>>
{
    public static int Count => 8;

    public static bool IsSupported => Vector256.IsHardwareAccelerated && Avx2.IsSupported;

    public static Vector256<int> Zero => Vector256<int>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<short> Widen(ref sbyte keys, nuint offset) => Avx2.ConvertToVector256Int16(SByteLoads.Load16(ref keys, offset));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> MultiplyAdd(Vector256<int> acc, Vector256<short> keys, int queryPair) =>
        acc + Avx2.MultiplyAddAdjacent(keys, Vector256.Create(queryPair).AsInt16());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<int> acc, float factor, ref float tokenScales, bool perToken, ref float scores, nuint t)
    {
        PairDot128.Store(acc.GetLower(), factor, ref tokenScales, perToken, ref scores, t);
        PairDot128.Store(acc.GetUpper(), factor, ref tokenScales, perToken, ref scores, t + 4);
    }
}

/// <summary>4 tokens a step (SSE4.1).</summary>
internal readonly struct PairDot128 : IPairDotOperator<Vector128<short>, Vector128<int>>
{
    public static int Count => 4;

    public static bool IsSupported => Vector128.IsHardwareAccelerated && Sse41.IsSupported;

    public static Vector128<int> Zero => Vector128<int>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<short> Widen(ref sbyte keys, nuint offset) => Sse41.ConvertToVector128Int16(SByteLoads.Load8(ref keys, offset));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> MultiplyAdd(Vector128<int> acc, Vector128<short> keys, int queryPair) =>
        acc + Sse2.MultiplyAddAdjacent(keys, Vector128.Create(queryPair).AsInt16());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector128<int> acc, float factor, ref float tokenScales, bool perToken, ref float scores, nuint t)
    {
        Vector128<float> s = Vector128.ConvertToSingle(acc) * factor;
        if (perToken)
        {
            s *= Vector128.LoadUnsafe(ref tokenScales, t);
        }

        s.StoreUnsafe(ref scores, t);
    }
}

/// <summary>One token a step: the scalar path and every vector path's last tokens. The widened pair is two int16 in an int32.</summary>
internal readonly struct PairDotScalar : IPairDotOperator<int, int>
{
    public static int Count => 1;

    public static bool IsSupported => true;

    public static int Zero => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Widen(ref sbyte keys, nuint offset) => (Unsafe.Add(ref keys, offset + 1) << 16) + (ushort)Unsafe.Add(ref keys, offset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int MultiplyAdd(int acc, int keys, int queryPair) =>
        acc + ((short)keys * (short)queryPair) + ((keys >> 16) * (queryPair >> 16));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(int acc, float factor, ref float tokenScales, bool perToken, ref float scores, nuint t)
    {
        float s = acc * factor;
        if (perToken)
        {
            s *= Unsafe.Add(ref tokenScales, t);
        }

        Unsafe.Add(ref scores, t) = s;
    }
}
