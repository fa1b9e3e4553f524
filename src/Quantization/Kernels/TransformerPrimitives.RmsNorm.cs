using System.Numerics.Tensors;

namespace Quantization;

public static partial class TransformerPrimitives
{
    /// <summary>
    /// Root-mean-square normalization with a learned weight, as Llama computes it:
    /// <c>r = 1 / sqrt(sum(x[i]^2) / n + epsilon)</c>, then <c>y[i] = weight[i] * (x[i] * r)</c>.
    /// </summary>
    /// <param name="x">The values of one token, n of them.</param>
    /// <param name="weight">The learned scale, n values.</param>
    /// <param name="epsilon">Added to the mean square before the square root (<c>rms_norm_eps</c>, 1e-5 or 1e-6); not negative.</param>
    /// <param name="destination">Receives the n normalized values; may be <paramref name="x"/> itself.</param>
    /// <remarks>
    /// The sum of squares is taken in double precision in a fixed order (four interleaved partial sums, added as
    /// <c>(s0 + s1) + (s2 + s3)</c>), so it is the same on every machine; the mean square is then rounded to float.
    /// </remarks>
    /// <exception cref="ArgumentException"><paramref name="x"/> is empty, or <paramref name="weight"/> or <paramref name="destination"/> has another length.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="epsilon"/> is negative or NaN.</exception>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float epsilon, Span<float> destination)
    {
        if (x.IsEmpty)
        {
            throw new ArgumentException("RMSNorm needs at least one value.", nameof(x));
        }

        ThrowIfLengthDiffers(weight.Length, x.Length, nameof(weight));
        ThrowIfLengthDiffers(destination.Length, x.Length, nameof(destination));
        if (!(epsilon >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "The epsilon must be zero or positive.");
        }

        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i <= x.Length - 4; i += 4)
        {
            s0 += (double)x[i] * x[i];
            s1 += (double)x[i + 1] * x[i + 1];
            s2 += (double)x[i + 2] * x[i + 2];
            s3 += (double)x[i + 3] * x[i + 3];
        }

        for (; i < x.Length; i++)
        {
            s0 += (double)x[i] * x[i];
        }

        float meanSquare = (float)(((s0 + s1) + (s2 + s3)) / x.Length);
        float r = 1f / MathF.Sqrt(meanSquare + epsilon);
        TensorPrimitives.Multiply(x, r, destination);
        TensorPrimitives.Multiply(destination, weight, destination);
    }

    private static void ThrowIfLengthDiffers(int length, int expected, string paramName)
    {
        if (length != expected)
        {
            throw new ArgumentException(FormattableString.Invariant($"'{paramName}' has {length} values but {expected} are needed."), paramName);
        }
    }
}
