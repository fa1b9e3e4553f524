namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>Computes the largest absolute value, <c>max |x|</c>: the statistic of symmetric quantization.</summary>
    /// <param name="x">The values; must not be empty.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <returns>The largest magnitude (never negative).</returns>
    /// <exception cref="ArgumentException"><paramref name="x"/> is empty.</exception>
    /// <exception cref="NonFiniteValueException"><paramref name="x"/> contains NaN or an infinity.</exception>
    /// <remarks>max |x| is max(-min, max), so this shares the one-pass <see cref="MinMax"/> kernel: the same bytes move and the result is exact.</remarks>
    public static float MaxMagnitude(ReadOnlySpan<float> x, string? tensorName = null)
    {
        (float min, float max) = MinMax(x, tensorName);
        return MathF.Max(-min, max);
    }
}
