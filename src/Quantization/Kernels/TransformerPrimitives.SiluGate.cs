namespace Quantization;

public static partial class TransformerPrimitives
{
    /// <summary>
    /// The gate of a SwiGLU feed-forward layer: <c>y[i] = silu(gate[i]) * up[i]</c> with
    /// <c>silu(g) = g / (1 + exp(-g))</c>; the result feeds the down projection.
    /// </summary>
    /// <param name="gate">The gate projection's output.</param>
    /// <param name="up">The up projection's output, as many values.</param>
    /// <param name="destination">Receives the gated values, as many; may be <paramref name="gate"/> or <paramref name="up"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="up"/> or <paramref name="destination"/> has another length than <paramref name="gate"/>.</exception>
    public static void SiluGate(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> destination)
    {
        ThrowIfLengthDiffers(up.Length, gate.Length, nameof(up));
        ThrowIfLengthDiffers(destination.Length, gate.Length, nameof(destination));
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            destination[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }
}
