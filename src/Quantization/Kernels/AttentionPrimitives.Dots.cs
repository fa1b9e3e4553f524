using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

internal static partial class AttentionPrimitives
{
    /// <summary>Computes dots of float key rows with float query heads (the fp32 cache's attention).</summary>
    /// <param name="keys">The key rows, [tokens, headDim].</param>
    /// <param name="queries">The query heads that share the keys, [heads, headDim].</param>
    /// <param name="headDim">The head dimension.</param>
    /// <param name="dots">Receives one dot per head and token.</param>
    /// <param name="dotStride">The distance between two heads' dots.</param>
    public static void Dots(ReadOnlySpan<float> keys, ReadOnlySpan<float> queries, int headDim, Span<float> dots, int dotStride)
    {
        if (FloatDot512.IsSupported && headDim >= FloatDot512.Count)
        {
            Dots<float, float, Vector512<float>, Vector512<float>, float, FloatDot512, FloatDotScalar>(keys, queries, headDim, dots, dotStride);
        }
        else if (FloatDot256.IsSupported && headDim >= FloatDot256.Count)
        {
            Dots<float, float, Vector256<float>, Vector256<float>, float, FloatDot256, FloatDotScalar>(keys, queries, headDim, dots, dotStride);
        }
        else if (FloatDot128.IsSupported && headDim >= FloatDot128.Count)
        {
            Dots<float, float, Vector128<float>, Vector128<float>, float, FloatDot128, FloatDotScalar>(keys, queries, headDim, dots, dotStride);
        }
        else
        {
            Dots<float, float, float, float, float, FloatDotScalar, FloatDotScalar>(keys, queries, headDim, dots, dotStride);
        }
    }

    /// <summary>
    /// The float dots of a block of query rows (<paramref name="group"/> rows per query token) with the float key rows
    /// of tokens <paramref name="firstToken"/> onwards, causally: token t's rows meet the keys of tokens below
    /// <c>before + t + 1</c>, and their scores land at <c>scores[row * stride + token]</c>. Each token's rows go through
    /// <see cref="Dots(ReadOnlySpan{float}, ReadOnlySpan{float}, int, Span{float}, int)"/> on their own, so a row's scores
    /// have the same bits as when its token is attended alone.
    /// </summary>
    public static void CausalDots(ReadOnlySpan<float> keys, int firstToken, ReadOnlySpan<float> queries, int headDim, int group, int before, Span<float> scores, int stride)
    {
        int tokens = queries.Length / (group * headDim), rowWidth = group * headDim;
        for (int t = 0; t < tokens; t++)
        {
            int seen = before + t + 1 - firstToken;
            if (seen > 0)
            {
                Dots(keys[..(seen * headDim)], queries.Slice(t * rowWidth, rowWidth), headDim, scores[((t * group * stride) + firstToken)..], stride);
            }
        }
    }

    /// <summary>
    /// The dot driver: for each key row, the query heads in fours (one widening of the row serves four heads), then one
    /// at a time; the elements past the last full step go through <typeparamref name="TTail"/>.
    /// </summary>
    private static void Dots<TKey, TQuery, TWide, TAcc, TResult, TOp, TTail>(ReadOnlySpan<TKey> keys, ReadOnlySpan<TQuery> queries, int headDim, Span<TResult> dots, int dotStride)
        where TResult : INumberBase<TResult>
        where TOp : IDotOperator<TKey, TQuery, TWide, TAcc, TResult>
        where TTail : IDotOperator<TKey, TQuery, TResult, TResult, TResult>
    {
        int tokens = keys.Length / headDim, heads = queries.Length / headDim;
        Debug.Assert(keys.Length == tokens * headDim && queries.Length == heads * headDim, "Whole rows.");
        Debug.Assert(heads == 0 || dots.Length >= ((heads - 1) * dotStride) + tokens, "A dot for every head and token.");
        nuint dim = (nuint)headDim;
        nuint vectorEnd = dim - (dim % (nuint)TOp.Count);
        ref TKey key0 = ref MemoryMarshal.GetReference(keys);
        ref TQuery query0 = ref MemoryMarshal.GetReference(queries);
        for (int t = 0; t < tokens; t++)
        {
            ref TKey row = ref Unsafe.Add(ref key0, (nuint)t * dim);
            int j = 0;
            for (; j + 4 <= heads; j += 4)
            {
                ref TQuery qa = ref Unsafe.Add(ref query0, (nuint)j * dim);
                ref TQuery qb = ref Unsafe.Add(ref qa, dim);
                ref TQuery qc = ref Unsafe.Add(ref qb, dim);
                ref TQuery qd = ref Unsafe.Add(ref qc, dim);
                TAcc a = TOp.Zero, b = TOp.Zero, c = TOp.Zero, d = TOp.Zero;
                for (nuint i = 0; i < vectorEnd; i += (nuint)TOp.Count)
                {
                    TWide k = TOp.Widen(ref row, i);
                    a = TOp.MultiplyAdd(a, k, ref qa, i);
                    b = TOp.MultiplyAdd(b, k, ref qb, i);
                    c = TOp.MultiplyAdd(c, k, ref qc, i);
                    d = TOp.MultiplyAdd(d, k, ref qd, i);
                }

                (TResult sa, TResult sb, TResult sc, TResult sd) = TOp.Sum4(a, b, c, d);
                dots[(j * dotStride) + t] = sa + Tail<TKey, TQuery, TResult, TTail>(ref row, ref qa, vectorEnd, dim);
                dots[((j + 1) * dotStride) + t] = sb + Tail<TKey, TQuery, TResult, TTail>(ref row, ref qb, vectorEnd, dim);
                dots[((j + 2) * dotStride) + t] = sc + Tail<TKey, TQuery, TResult, TTail>(ref row, ref qc, vectorEnd, dim);
                dots[((j + 3) * dotStride) + t] = sd + Tail<TKey, TQuery, TResult, TTail>(ref row, ref qd, vectorEnd, dim);
            }

            for (; j < heads; j++)
            {
                ref TQuery q = ref Unsafe.Add(ref query0, (nuint)j * dim);
                TAcc a = TOp.Zero;
                for (nuint i = 0; i < vectorEnd; i += (nuint)TOp.Count)
                {
                    a = TOp.MultiplyAdd(a, TOp.Widen(ref row, i), ref q, i);
                }

                dots[(j * dotStride) + t] = TOp.Sum(a) + Tail<TKey, TQuery, TResult, TTail>(ref row, ref q, vectorEnd, dim);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TResult Tail<TKey, TQuery, TResult, TTail>(ref TKey row, ref TQuery query, nuint start, nuint end)
        where TResult : INumberBase<TResult>
        where TTail : IDotOperator<TKey, TQuery, TResult, TResult, TResult>
    {
        TResult acc = TTail.Zero;
        for (nuint i = start; i < end; i++)
        {
            acc = TTail.MultiplyAdd(acc, TTail.Widen(ref row, i), ref query, i);
        }

        return acc;
    }
}
