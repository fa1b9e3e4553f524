namespace Quantization;

/// <summary>
/// The float kernels of a decoder-only transformer block that sit between the quantized linears and the KV cache, in the
/// Llama family's arithmetic (Hugging Face <c>LlamaForCausalLM</c>): <see cref="RmsNorm"/>, rotary position embedding
/// (<see cref="RotaryInverseFrequencies"/>, <see cref="RotaryAngles"/>, <see cref="ApplyRotaryEmbedding"/>, rotate-half
/// layout) and the SwiGLU gate (<see cref="SiluGate"/>).
/// </summary>
/// <remarks>
/// Every kernel gives the same bits on every SIMD tier: the element-wise steps are single IEEE operations (multiply, add,
/// subtract, divide), so the vector paths of <see cref="System.Numerics.Tensors.TensorPrimitives"/> round exactly as the
/// scalar path does; the one reduction (RMSNorm's sum of squares) runs in a fixed order in double precision, where the
/// squares of floats are exact; exponentials and trigonometric functions are the scalar <see cref="MathF"/> ones. None
/// of these steps is a measurable share of a decoder's time next to its linears and attention. Sources and destinations
/// may be the same span (in place) but must not otherwise overlap; NaN and infinity propagate.
/// </remarks>
public static partial class TransformerPrimitives
{
}
