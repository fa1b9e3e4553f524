namespace Quantization;

/// <summary>How much one tensor lost to quantization, and how much smaller it became.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="ElementCount">The number of elements compared.</param>
/// <param name="SqnrDb">Signal-to-quantization-noise ratio in decibels, <c>10 log10(sum x^2 / sum (x - x')^2)</c>; +infinity when the error is zero, -infinity when the original is all zeros and the restored values are not.</param>
/// <param name="CosineSimilarity">Cosine of the angle between the original and the restored values (1 when both are zero).</param>
/// <param name="MaxAbsoluteError">The largest <c>|x - x'|</c>.</param>
/// <param name="MeanAbsoluteError">The mean <c>|x - x'|</c>.</param>
/// <param name="BytesBefore">The size before quantization.</param>
/// <param name="BytesAfter">The size after quantization, parameters included.</param>
public sealed record TensorErrorReport(
    string Name,
    long ElementCount,
    double SqnrDb,
    double CosineSimilarity,
    double MaxAbsoluteError,
    double MeanAbsoluteError,
    long BytesBefore,
    long BytesAfter)
{
    /// <summary>Gets <see cref="BytesAfter"/> / <see cref="BytesBefore"/> (1 for an empty tensor).</summary>
    public double SizeRatio => BytesBefore == 0 ? 1 : (double)BytesAfter / BytesBefore;

    /// <summary>Compares fp32 values with their quantized tensor, which is dequantized for the comparison.</summary>
    /// <param name="original">The fp32 values that were quantized.</param>
    /// <param name="quantized">The quantized tensor; its name names the report (or "tensor" when it has none).</param>
    /// <returns>The report; the size before is 4 bytes per value, after is <see cref="QuantizedTensor.SizeInBytes"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="quantized"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The element counts differ.</exception>
    /// <exception cref="NonFiniteValueException">The original values contain NaN or an infinity.</exception>
    public static TensorErrorReport Compare(ReadOnlySpan<float> original, QuantizedTensor quantized)
    {
        ArgumentNullException.ThrowIfNull(quantized);
        QuantizationPrimitives.ValidateLengths(original.Length, quantized.ElementCount, nameof(quantized));
        return Compare(quantized.Name ?? "tensor", original, quantized.Dequantize(), original.Length * (long)sizeof(float), quantized.SizeInBytes);
    }

    /// <summary>Compares original values with restored (dequantized) ones.</summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="original">The original values.</param>
    /// <param name="restored">The values after a quantize-dequantize round trip.</param>
    /// <param name="bytesBefore">The size before quantization.</param>
    /// <param name="bytesAfter">The size after quantization.</param>
    /// <returns>The report.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="name"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is negative.</exception>
    /// <exception cref="NonFiniteValueException">Either span contains NaN or an infinity.</exception>
    public static TensorErrorReport Compare(string name, ReadOnlySpan<float> original, ReadOnlySpan<float> restored, long bytesBefore, long bytesAfter)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfNegative(bytesBefore);
        ArgumentOutOfRangeException.ThrowIfNegative(bytesAfter);
        QuantizationPrimitives.ValidateLengths(original.Length, restored.Length, nameof(restored));
        QuantizationPrimitives.ThrowIfNonFinite(original, name, nameof(original));
        QuantizationPrimitives.ThrowIfNonFinite(restored, name, nameof(restored));

        // Sums in double: over millions of elements float accumulation would lose the small noise term.
        double signal = 0, noise = 0, restoredEnergy = 0, dot = 0, absolute = 0, maxAbsolute = 0;
        for (int i = 0; i < original.Length; i++)
        {
            double x = original[i], y = restored[i], error = Math.Abs(x - y);
            signal += x * x;
            restoredEnergy += y * y;
            dot += x * y;
            noise += error * error;
            absolute += error;
            maxAbsolute = Math.Max(maxAbsolute, error);
        }

        double sqnr = noise == 0 ? double.PositiveInfinity : 10 * Math.Log10(signal / noise);
        double cosine = signal == 0 && restoredEnergy == 0 ? 1 : signal == 0 || restoredEnergy == 0 ? 0 : dot / Math.Sqrt(signal * restoredEnergy);
        double mean = original.IsEmpty ? 0 : absolute / original.Length;
        return new TensorErrorReport(name, original.Length, sqnr, cosine, maxAbsolute, mean, bytesBefore, bytesAfter);
    }
}
