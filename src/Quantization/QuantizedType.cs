namespace Quantization;

/// <summary>The integer type that quantized values are stored in.</summary>
public enum QuantizedType
{
    /// <summary>Signed 8-bit integers, [-128, 127].</summary>
    Int8,

    /// <summary>Unsigned 8-bit integers, [0, 255].</summary>
    UInt8,

    /// <summary>Signed 4-bit integers, [-8, 7], stored two a byte (see <see cref="QuantizedTensor.Data"/>).</summary>
    Int4,

    /// <summary>Unsigned 4-bit integers, [0, 15], stored two a byte (see <see cref="QuantizedTensor.Data"/>).</summary>
    UInt4,
}
