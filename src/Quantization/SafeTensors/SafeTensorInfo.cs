namespace Quantization;

/// <summary>One tensor of a safetensors file, as its header describes it.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DataType">The element type.</param>
/// <param name="Shape">The shape; empty for a scalar.</param>
/// <param name="Offset">Where its bytes start, counted from the start of the file.</param>
/// <param name="Length">How many bytes it has: the element count times the element size.</param>
public sealed record SafeTensorInfo(string Name, SafeTensorDataType DataType, IReadOnlyList<long> Shape, long Offset, long Length)
{
    /// <summary>Gets the number of elements.</summary>
    public long ElementCount => Length / DataType.ElementSize();
}
