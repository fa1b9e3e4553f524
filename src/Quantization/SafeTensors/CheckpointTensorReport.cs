namespace Quantization;

/// <summary>What <see cref="CheckpointQuantizer"/> did to one tensor.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="SourceType">Its element type in the input.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="Quantized">Whether it was quantized (else copied).</param>
/// <param name="BytesBefore">Its bytes in the input.</param>
/// <param name="BytesAfter">Its bytes in the output, with scales and zero points.</param>
public sealed record CheckpointTensorReport(string Name, SafeTensorDataType SourceType, IReadOnlyList<long> Shape, bool Quantized, long BytesBefore, long BytesAfter);
