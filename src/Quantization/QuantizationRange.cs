namespace Quantization;

/// <summary>Which part of a quantized type's range a scheme maps real values onto.</summary>
public enum QuantizationRange
{
    /// <summary>The whole range of the type, for example [-128, 127] for int8.</summary>
    Full,

    /// <summary>
    /// The range without the most negative value of a signed type, for example [-127, 127] for int8, so that
    /// the range is symmetric around zero. Only valid for signed types. ONNX Runtime uses it for symmetric weights.
    /// </summary>
    Restricted,
}
