using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>Computes the exact dot product of two int8 vectors, <c>sum_i x[i] * y[i]</c>, in int32 arithmetic.</summary>
    /// <param name="x">The first vector.</param>
    /// <param name="y">The second vector; the same length.</param>
    /// <returns>The sum. It cannot overflow up to 131,071 elements (131,072 products of -128 · -128 reach 2^31); beyond that int32 addition wraps, the same on every tier.</returns>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <remarks>
    /// Every value of both types is allowed, -128 included: the bytes are widened to int16 and <c>vpmaddwd</c> sums adjacent
    /// products into int32 (at most 2 x 128 x 128 = 32768, which int16 could not hold but int32 does), so no intermediate
    /// result saturates, unlike the <c>vpmaddubsw</c> route. Every tier gives the same sum.
    /// </remarks>
    public static int DotInt8(ReadOnlySpan<sbyte> x, ReadOnlySpan<sbyte> y)
    {
        ValidateLengths(x.Length, y.Length, nameof(y));
        ref sbyte a = ref MemoryMarshal.GetReference(x);
        ref sbyte b = ref MemoryMarshal.GetReference(y);
        nuint length = (nuint)x.Length;
        nuint i = 0;
        int sum = 0;
        if (Vector512.IsHardwareAccelerated && Avx512BW.IsSupported)
        {
            Vector512<int> acc = Vector512<int>.Zero;
            for (; i + 32 <= length; i += 32)
            {
                acc += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref a, i)), Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref b, i)));
            }

            sum = Vector512.Sum(acc);
        }
        else if (Vector256.IsHardwareAccelerated && Avx2.IsSupported)
        {
            Vector256<int> acc = Vector256<int>.Zero;
            for (; i + 16 <= length; i += 16)
            {
                acc += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref a, i)), Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref b, i)));
            }

            sum = Vector256.Sum(acc);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            Vector128<int> acc = Vector128<int>.Zero;
            for (; i + 16 <= length; i += 16)
            {
                (Vector128<short> aLow, Vector128<short> aHigh) = Vector128.Widen(Vector128.LoadUnsafe(ref a, i));
                (Vector128<short> bLow, Vector128<short> bHigh) = Vector128.Widen(Vector128.LoadUnsafe(ref b, i));
                acc += MultiplyAddAdjacent(aLow, bLow) + MultiplyAddAdjacent(aHigh, bHigh);
            }

            sum = Vector128.Sum(acc);
        }

        for (; i < length; i++)
        {
            sum += Unsafe.Add(ref a, i) * Unsafe.Add(ref b, i);
        }

        return sum;
    }

    /// <summary>
    /// Sums of products of int16 lanes, four int32 lanes whose total is the dot product: <c>pmaddwd</c> where SSE2 has it,
    /// elsewhere the products widened to int32 (other lanes, the same total).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> MultiplyAddAdjacent(Vector128<short> a, Vector128<short> b)
    {
        if (Sse2.IsSupported)
        {
            return Sse2.MultiplyAddAdjacent(a, b);
        }

        (Vector128<int> aLow, Vector128<int> aHigh) = Vector128.Widen(a);
        (Vector128<int> bLow, Vector128<int> bHigh) = Vector128.Widen(b);
        return (aLow * bLow) + (aHigh * bHigh);
    }
}
