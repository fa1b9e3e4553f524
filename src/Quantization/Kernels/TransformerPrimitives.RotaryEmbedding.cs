using System.Numerics.Tensors;

namespace Quantization;

public static partial class TransformerPrimitives
{
    /// <summary>
    /// Computes the rotary embedding's inverse frequencies, <c>inv[i] = 1 / theta^(2i / headDim)</c> for
    /// <c>i &lt; headDim / 2</c> (Llama's default rotary embedding; <c>rope_theta</c> is 10000 unless the model's
    /// configuration says otherwise).
    /// </summary>
    /// <param name="headDim">The head dimension; even and positive.</param>
    /// <param name="theta">The base; above 1.</param>
    /// <param name="destination">Receives <c>headDim / 2</c> frequencies.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="headDim"/> is odd or not positive, or <paramref name="theta"/> is not above 1.</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> does not hold <c>headDim / 2</c> values.</exception>
    public static void RotaryInverseFrequencies(int headDim, float theta, Span<float> destination)
    {
        ThrowIfBadHeadDim(headDim);
        if (!(theta > 1) || float.IsInfinity(theta))
        {
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "The rotary base must be a finite number above 1.");
        }

        ThrowIfLengthDiffers(destination.Length, headDim / 2, nameof(destination));
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = 1f / MathF.Pow(theta, (float)(2 * i) / headDim);
        }
    }

    /// <summary>
    /// Computes the cosines and sines of one position's rotation angles, <c>angle[i] = position * inv[i]</c> (a float
    /// product), for <see cref="ApplyRotaryEmbedding"/>.
    /// </summary>
    /// <param name="position">The token's position in the sequence; not negative.</param>
    /// <param name="inverseFrequencies">The inverse frequencies from <see cref="RotaryInverseFrequencies"/>, headDim / 2 values.</param>
    /// <param name="cos">Receives the cosines, as many as there are frequencies.</param>
    /// <param name="sin">Receives the sines, as many as there are frequencies.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="position"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="inverseFrequencies"/> is empty, or <paramref name="cos"/> or <paramref name="sin"/> has another length.</exception>
    public static void RotaryAngles(int position, ReadOnlySpan<float> inverseFrequencies, Span<float> cos, Span<float> sin)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        if (inverseFrequencies.IsEmpty)
        {
            throw new ArgumentException("The rotary embedding needs at least one frequency.", nameof(inverseFrequencies));
        }

        ThrowIfLengthDiffers(cos.Length, inverseFrequencies.Length, nameof(cos));
        ThrowIfLengthDiffers(sin.Length, inverseFrequencies.Length, nameof(sin));
        for (int i = 0; i < inverseFrequencies.Length; i++)
        {
            (sin[i], cos[i]) = MathF.SinCos(position * inverseFrequencies[i]);
        }
    }

    /// <summary>
    /// Rotates every head of one token in place, in the rotate-half layout of Hugging Face Llama checkpoints (whose
    /// q and k projection rows are permuted for it): for each head and <c>i &lt; headDim / 2</c>, with
    /// <c>a = x[i]</c> and <c>b = x[i + headDim / 2]</c>, <c>x[i] = a * cos[i] - b * sin[i]</c> and
    /// <c>x[i + headDim / 2] = b * cos[i] + a * sin[i]</c>.
    /// </summary>
    /// <param name="x">The token's heads, [heads, headDim] (a query or key projection's output).</param>
    /// <param name="cos">The position's cosines from <see cref="RotaryAngles"/>, headDim / 2 values.</param>
    /// <param name="sin">The position's sines, headDim / 2 values.</param>
    /// <exception cref="ArgumentException"><paramref name="cos"/> is empty, <paramref name="sin"/> has another length, or <paramref name="x"/> is not a whole number of heads of <c>2 * cos.Length</c> values.</exception>
    public static void ApplyRotaryEmbedding(Span<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = cos.Length;
        if (half == 0)
        {
            throw new ArgumentException("The rotary embedding needs at least one angle.", nameof(cos));
        }

        ThrowIfLengthDiffers(sin.Length, half, nameof(sin));
        if (x.Length % (2 * half) != 0)
        {
            throw new ArgumentException(FormattableString.Invariant($"'x' has {x.Length} values, not a whole number of heads of {2 * half}."), nameof(x));
        }

        Span<float> rotated = half <= 256 ? stackalloc float[half] : new float[half];
        Span<float> product = half <= 256 ? stackalloc float[half] : new float[half];
        for (int head = 0; head < x.Length; head += 2 * half)
        {
            Span<float> a = x.Slice(head, half), b = x.Slice(head + half, half);
            TensorPrimitives.Multiply(a, cos, rotated);
            TensorPrimitives.Multiply(b, sin, product);
            TensorPrimitives.Subtract(rotated, product, rotated);
            TensorPrimitives.Multiply(a, sin, product);
            TensorPrimitives.Multiply(b, cos, b);
            TensorPrimitives.Add(b, product, b);
            rotated.CopyTo(a);
        }
    }

    private static void ThrowIfBadHeadDim(int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "The head dimension must be even and positive.");
        }
    }
}
