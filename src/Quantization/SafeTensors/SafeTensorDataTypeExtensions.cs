namespace Quantization;

/// <summary>Names and sizes of <see cref="SafeTensorDataType"/>.</summary>
public static class SafeTensorDataTypeExtensions
{
    private static readonly string[] Names = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"];

    /// <summary>Gets the size of one element in bytes.</summary>
    /// <param name="type">The type.</param>
    /// <returns>1, 2, 4 or 8.</returns>
    public static int ElementSize(this SafeTensorDataType type) => type switch
    {
        SafeTensorDataType.Bool or SafeTensorDataType.UInt8 or SafeTensorDataType.Int8 or SafeTensorDataType.Float8E5M2 or SafeTensorDataType.Float8E4M3 => 1,
        SafeTensorDataType.Int16 or SafeTensorDataType.UInt16 or SafeTensorDataType.Float16 or SafeTensorDataType.BFloat16 => 2,
        SafeTensorDataType.Int32 or SafeTensorDataType.UInt32 or SafeTensorDataType.Float32 => 4,
        SafeTensorDataType.Float64 or SafeTensorDataType.Int64 or SafeTensorDataType.UInt64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Not a safetensors data type."),
    };

    /// <summary>Gets the type's name in a safetensors header, e.g. <c>F16</c>.</summary>
    /// <param name="type">The type.</param>
    /// <returns>The name.</returns>
    public static string HeaderName(this SafeTensorDataType type) =>
        (uint)type < (uint)Names.Length ? Names[(int)type] : throw new ArgumentOutOfRangeException(nameof(type), type, "Not a safetensors data type.");

    /// <summary>Finds the type of a header name.</summary>
    internal static bool TryParse(string name, out SafeTensorDataType type)
    {
        int index = Array.IndexOf(Names, name);
        type = (SafeTensorDataType)Math.Max(index, 0);
        return index >= 0;
    }
}
