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
}
