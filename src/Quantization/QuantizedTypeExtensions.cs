namespace Quantization;

/// <summary>Properties of <see cref="QuantizedType"/> values.</summary>
public static class QuantizedTypeExtensions
{
    /// <summary>Gets whether the type is signed.</summary>
    /// <param name="type">The quantized type.</param>
    /// <returns><see langword="true"/> for <see cref="QuantizedType.Int8"/> and <see cref="QuantizedType.Int4"/>.</returns>
    public static bool IsSigned(this QuantizedType type) => type switch
    {
        QuantizedType.Int8 or QuantizedType.Int4 => true,
        QuantizedType.UInt8 or QuantizedType.UInt4 => false,
        _ => throw UnknownType(type),
    };

    /// <summary>Gets the number of bits of one value.</summary>
    /// <param name="type">The quantized type.</param>
    /// <returns>8 or 4.</returns>
    public static int GetBitWidth(this QuantizedType type) => type switch
    {
        QuantizedType.Int8 or QuantizedType.UInt8 => 8,
        QuantizedType.Int4 or QuantizedType.UInt4 => 4,
        _ => throw UnknownType(type),
    };

    /// <summary>Gets the smallest value the type holds (-128, 0, -8 or 0).</summary>
    /// <param name="type">The quantized type.</param>
    /// <returns>The type's minimum.</returns>
    public static int GetMinValue(this QuantizedType type) =>
        type.IsSigned() ? -(1 << (type.GetBitWidth() - 1)) : 0;

    /// <summary>Gets the largest value the type holds (127, 255, 7 or 15).</summary>
    /// <param name="type">The quantized type.</param>
    /// <returns>The type's maximum.</returns>
    public static int GetMaxValue(this QuantizedType type) =>
        type.IsSigned() ? (1 << (type.GetBitWidth() - 1)) - 1 : (1 << type.GetBitWidth()) - 1;

    private static ArgumentOutOfRangeException UnknownType(QuantizedType type) =>
        new(nameof(type), type, "Unknown quantized type.");
}
