using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>Computes the smallest and largest value in one pass: the statistic of MinMax (RTN) calibration.</summary>
    /// <param name="x">The values; must not be empty.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <returns>The minimum and maximum. A zero result is +0 even when the data holds -0.</returns>
    /// <exception cref="ArgumentException"><paramref name="x"/> is empty.</exception>
    /// <exception cref="NonFiniteValueException"><paramref name="x"/> contains NaN or an infinity.</exception>
    public static (float Min, float Max) MinMax(ReadOnlySpan<float> x, string? tensorName = null)
    {
        if (x.IsEmpty)
        {
            throw new ArgumentException("The minimum and maximum of no values are not defined.", nameof(x));
        }

        if (MinMaxCore(x, out float min, out float max))
        {
            ThrowIfNonFinite(x, tensorName, nameof(x));
        }

        return (min, max);
    }

    /// <summary>
    /// Computes min and max of a non-empty run with the min/max instructions (NaN in the data gives an unspecified
    /// result); returns whether the run may hold NaN or an infinity. Zero results are normalised to +0, so every tier
    /// gives the same bits whatever order it met -0 and +0 in.
    /// </summary>
    internal static bool MinMaxCore(ReadOnlySpan<float> x, out float min, out float max)
    {
        Debug.Assert(!x.IsEmpty, "Callers check for empty data.");
        ref float src = ref MemoryMarshal.GetReference(x);
        nuint length = (nuint)x.Length;
        bool nonFinite;

        // Four vectors a block, folded into one min and one max accumulator; the last block overlaps the one before
        // it, which min and max do not mind.
        if (Vector512.IsHardwareAccelerated && length >= (nuint)Vector512<float>.Count * 4)
        {
            Vector512<float> mn = Vector512.LoadUnsafe(ref src), mx = mn;
            Vector512<uint> bad = Vector512<uint>.Zero;
            nuint last = length - ((nuint)Vector512<float>.Count * 4);
            for (nuint i = 0, step = FirstStep(ref src, Vector512<byte>.Count, Vector512<float>.Count * 4); ; i = Math.Min(i + step, last), step = ((nuint)Vector512<float>.Count * 4))
            {
                Vector512<float> x0 = Vector512.LoadUnsafe(ref src, i);
                Vector512<float> x1 = Vector512.LoadUnsafe(ref src, i + 16);
                Vector512<float> x2 = Vector512.LoadUnsafe(ref src, i + 32);
                Vector512<float> x3 = Vector512.LoadUnsafe(ref src, i + 48);
                mn = Vector512.MinNative(mn, Vector512.MinNative(Vector512.MinNative(x0, x1), Vector512.MinNative(x2, x3)));
                mx = Vector512.MaxNative(mx, Vector512.MaxNative(Vector512.MaxNative(x0, x1), Vector512.MaxNative(x2, x3)));
                bad |= QuantizeOperator.MaybeNonFinite(x0, x1, x2, x3);
                if (i == last)
                {
                    break;
                }
            }

            (min, max) = Horizontal(Vector256.MinNative(mn.GetLower(), mn.GetUpper()), Vector256.MaxNative(mx.GetLower(), mx.GetUpper()));
            nonFinite = bad != Vector512<uint>.Zero;
        }
        else if (Vector256.IsHardwareAccelerated && length >= (nuint)Vector256<float>.Count * 4)
        {
            Vector256<float> mn = Vector256.LoadUnsafe(ref src), mx = mn;
            Vector256<uint> bad = Vector256<uint>.Zero;
            nuint last = length - ((nuint)Vector256<float>.Count * 4);
            for (nuint i = 0, step = FirstStep(ref src, Vector256<byte>.Count, Vector256<float>.Count * 4); ; i = Math.Min(i + step, last), step = ((nuint)Vector256<float>.Count * 4))
            {
                Vector256<float> x0 = Vector256.LoadUnsafe(ref src, i);
                Vector256<float> x1 = Vector256.LoadUnsafe(ref src, i + 8);
                Vector256<float> x2 = Vector256.LoadUnsafe(ref src, i + 16);
                Vector256<float> x3 = Vector256.LoadUnsafe(ref src, i + 24);
                mn = Vector256.MinNative(mn, Vector256.MinNative(Vector256.MinNative(x0, x1), Vector256.MinNative(x2, x3)));
                mx = Vector256.MaxNative(mx, Vector256.MaxNative(Vector256.MaxNative(x0, x1), Vector256.MaxNative(x2, x3)));
                bad |= QuantizeOperator.MaybeNonFinite(x0, x1, x2, x3);
                if (i == last)
                {
                    break;
                }
            }

            (min, max) = Horizontal(mn, mx);
            nonFinite = bad != Vector256<uint>.Zero;
        }
        else if (Vector128.IsHardwareAccelerated && length >= (nuint)Vector128<float>.Count * 4)
        {
            Vector128<float> mn = Vector128.LoadUnsafe(ref src), mx = mn;
            Vector128<uint> bad = Vector128<uint>.Zero;
            nuint last = length - ((nuint)Vector128<float>.Count * 4);
            for (nuint i = 0, step = FirstStep(ref src, Vector128<byte>.Count, Vector128<float>.Count * 4); ; i = Math.Min(i + step, last), step = ((nuint)Vector128<float>.Count * 4))
            {
                Vector128<float> x0 = Vector128.LoadUnsafe(ref src, i);
                Vector128<float> x1 = Vector128.LoadUnsafe(ref src, i + 4);
                Vector128<float> x2 = Vector128.LoadUnsafe(ref src, i + 8);
                Vector128<float> x3 = Vector128.LoadUnsafe(ref src, i + 12);
                mn = Vector128.MinNative(mn, Vector128.MinNative(Vector128.MinNative(x0, x1), Vector128.MinNative(x2, x3)));
                mx = Vector128.MaxNative(mx, Vector128.MaxNative(Vector128.MaxNative(x0, x1), Vector128.MaxNative(x2, x3)));
                bad |= QuantizeOperator.MaybeNonFinite(x0, x1, x2, x3);
                if (i == last)
                {
                    break;
                }
            }

            (min, max) = Horizontal(mn, mx);
            nonFinite = bad != Vector128<uint>.Zero;
        }
        else
        {
            min = max = src;
            nonFinite = false;
            for (nuint i = 0; i < length; i++)
            {
                float value = Unsafe.Add(ref src, i);
                min = value < min ? value : min;
                max = value > max ? value : max;
                nonFinite |= !float.IsFinite(value);
            }
        }

        // -0 + 0 is +0: the sign of a zero result would otherwise depend on the order the tier met the zeros in.
        min += 0f;
        max += 0f;
        return nonFinite;
    }

    private static (float Min, float Max) Horizontal(Vector256<float> mn, Vector256<float> mx) =>
        Horizontal(Vector128.MinNative(mn.GetLower(), mn.GetUpper()), Vector128.MaxNative(mx.GetLower(), mx.GetUpper()));

    private static (float Min, float Max) Horizontal(Vector128<float> mn, Vector128<float> mx)
    {
        float min = mn[0], max = mx[0];
        for (int lane = 1; lane < Vector128<float>.Count; lane++)
        {
            min = MathF.Min(min, mn[lane]);
            max = MathF.Max(max, mx[lane]);
        }

        return (min, max);
    }
}
