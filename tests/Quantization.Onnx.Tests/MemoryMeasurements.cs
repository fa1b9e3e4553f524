namespace Quantization.Onnx.Tests;

/// <summary>Tests that measure the process's memory run alone, after the others, so that no other test's allocations count.</summary>
[CollectionDefinition(nameof(MemoryMeasurements), DisableParallelization = true)]
public sealed class MemoryMeasurements
{
}
