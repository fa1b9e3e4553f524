namespace Quantization;

/// <summary>Progress of a checkpoint quantization.</summary>
/// <param name="Tensor">The tensor just finished.</param>
/// <param name="BytesDone">Input bytes processed so far.</param>
/// <param name="BytesTotal">Input bytes in all.</param>
public readonly record struct CheckpointProgress(string Tensor, long BytesDone, long BytesTotal);
