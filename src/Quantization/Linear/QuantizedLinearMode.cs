namespace Quantization;

/// <summary>How a <see cref="QuantizedLinear"/> layer treats its input activations.</summary>
public enum QuantizedLinearMode
{
    /// <summary>
    /// Int8 weights and int8 activations: each token is quantized inside the call (dynamic, symmetric int8 over
    /// [-127, 127], ONNX Runtime's arithmetic), int8 x int8 products are summed exactly in int32, and the sum is scaled by
    /// <c>s_x[t] * s_w[n]</c> and the bias added in one pass.
    /// </summary>
    W8A8,

    /// <summary>
    /// Weight-only: float activations times int8 weights converted to float inside the dot product, then scaled by the
    /// channel's scale and the bias added. More accurate than <see cref="W8A8"/>; reads the same int8 weight.
    /// </summary>
    W8A16,

    /// <summary>
    /// 4-bit weights (Int4 or UInt4, per group) and float activations: each weight is dequantized inside the dot product
    /// to exactly <c>(q - zeroPoint) * scale</c>, and the bias added. The mode for a layer whose weight is 4-bit.
    /// </summary>
    W4A16,

    /// <summary>
    /// 4-bit weights and int8 activations: each token is quantized as in <see cref="W8A8"/>, each group's products are
    /// summed exactly in int32 and scaled by the group's scale in float, then the total by the token's scale and the bias
    /// added. Faster than <see cref="W4A16"/> for many tokens, less accurate.
    /// </summary>
    W4A8,
}
