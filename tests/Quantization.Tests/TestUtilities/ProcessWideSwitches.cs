namespace Quantization.Tests.TestUtilities;

/// <summary>Tests that flip a process-wide setting (an <see cref="AppContext"/> switch) run alone, after the parallel ones, so no other test sees the flipped value.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideSwitches
{
    public const string Name = "Process-wide switches";
}
