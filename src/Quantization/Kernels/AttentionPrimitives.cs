using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The kernels of decode attention on a KV cache: dot products of one query token's heads with key rows
/// (<see cref="Dots(ReadOnlySpan{sbyte}, ReadOnlySpan{short}, int, Span{int}, int)"/>), the softmax, and the weighted sum of
/// value rows (<see cref="WeightedSum(ReadOnlySpan{sbyte}, int, ReadOnlySpan{float}, int, int, Span{float})"/>). Each kernel
/// serves all the query heads of a grouped-query-attention group in one pass over the keys or values they share.
/// </summary>
/// <remarks>
/// Int8 keys meet the query quantized to int16 (<see cref="QuantizeQuery"/>): the dots are exact int32 sums, the same on
/// every SIMD tier. The float steps (softmax, weighted sums) follow the scalar reference within float rounding.
/// Arguments are checked by the callers (the caches); the kernels only assert.
/// </remarks>
internal static partial class AttentionPrimitives
{
    /// <summary>The largest int16 magnitude a quantized query uses.</summary>
    public const int QueryLevels = short.MaxValue;

    /// <summary>
    /// The largest head dimension whose int8-by-int16 dots stay exact in int32: 128 * 32767 * 512 &lt; 2^31.
    /// </summary>
    public const int MaxHeadDim = 512;

    /// <summary>
    /// Quantizes one query head to int16, symmetric: <c>q16[d] = round_half_even(x[d] / s)</c> with
    /// <c>x[d] = query[d] * channelScales[d]</c> (or <c>query[d]</c> when there are no channel scales) and
    /// <c>s = max |x| / 32767</c>; an all-zero head gets s = 0 and zeros.
    /// </summary>
    /// <remarks>
    /// Every step is an exactly rounded IEEE operation (multiply, divide, round to integer), so the vector and scalar
    /// paths of <see cref="TensorPrimitives"/> give the same int16 values. |x / s| stays within 32767 plus the scale's
    /// rounding (far below 0.5), so no clamp is needed.
    /// </remarks>
    /// <returns>The scale s: a dot with the int16 query times s is the dot with x.</returns>
    public static float QuantizeQuery(ReadOnlySpan<float> query, ReadOnlySpan<float> channelScales, Span<float> scratch, Span<short> destination)
    {
        Debug.Assert(destination.Length == query.Length && scratch.Length == query.Length, "One value per element.");
        Debug.Assert(channelScales.IsEmpty || channelScales.Length == query.Length, "One channel scale per element.");
        ReadOnlySpan<float> x = query;
        if (!channelScales.IsEmpty)
        {
            TensorPrimitives.Multiply(query, channelScales, scratch);
            x = scratch;
        }

        float amax = MathF.Abs(TensorPrimitives.MaxMagnitude(x));
        if (amax == 0f)
        {
            destination.Clear();
            return 0f;
        }

        float scale = amax / QueryLevels;
        TensorPrimitives.Divide(x, scale, scratch);
        TensorPrimitives.Round(scratch, scratch);
        TensorPrimitives.ConvertTruncating<float, short>(scratch, destination);
        return scale;
    }

    /// <summary>
    /// Turns scores into softmax probabilities in place: <c>p[t] = exp(s[t] - max s) / sum</c>, subtracting the maximum so
    /// that no exponential overflows.
    /// </summary>
    public static void Softmax(Span<float> scores)
    {
        Debug.Assert(!scores.IsEmpty, "A softmax needs at least one score.");
        float max = TensorPrimitives.Max(scores);
        TensorPrimitives.Subtract(scores, max, scores);
        TensorPrimitives.Exp(scores, scores);
        TensorPrimitives.Multiply(scores, 1f / TensorPrimitives.Sum(scores), scores);
    }

    /// <summary>
    /// scores[t] = dots[t] * factor (* tokenScales[t] when there are per-token key scales): an int dot of a quantized
    /// query becomes a score.
    /// </summary>
    public static void ScaleDots(ReadOnlySpan<int> dots, float factor, ReadOnlySpan<float> tokenScales, Span<float> scores)
    {
        TensorPrimitives.ConvertTruncating(dots, scores);
        TensorPrimitives.Multiply(scores, factor, scores);
        if (!tokenScales.IsEmpty)
        {
            TensorPrimitives.Multiply(scores, tokenScales, scores);
        }
    }

    /// <summary>
    /// Asks for every cache line of <paramref name="data"/> (x86; elsewhere nothing). Attention walks a cache block by
    /// block, and each KV head's rows of a block are a few KiB at an unrelated address that the hardware prefetchers do
    /// not guess; asking for the next block while this one is computed keeps memory busy. Prefetches never fault, and a
    /// stale address after a GC move only wastes them.
    /// </summary>
    public static unsafe void Prefetch<T>(ReadOnlySpan<T> data)
        where T : unmanaged
    {
        if (!Sse.IsSupported)
        {
            return;
        }

        byte* start = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(data));
        nuint bytes = (nuint)data.Length * (nuint)sizeof(T);
        for (nuint i = 0; i < bytes; i += 64)
        {
            Sse.Prefetch0(start + i);
        }
    }

}
