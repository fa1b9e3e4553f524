namespace Quantization;

/// <summary>A tensor to be written: its name, element type and shape.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DataType">The element type.</param>
/// <param name="Shape">The shape; empty for a scalar.</param>
public sealed record SafeTensorDescriptor(string Name, SafeTensorDataType DataType, IReadOnlyList<long> Shape);
