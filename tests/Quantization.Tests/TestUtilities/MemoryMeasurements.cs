namespace Quantization.Tests.TestUtilities;

/// <summary>Tests that measure the process's heap run alone, after the parallel ones, so other tests' garbage does not count.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MemoryMeasurements
{
    public const string Name = "Memory measurements";
}
