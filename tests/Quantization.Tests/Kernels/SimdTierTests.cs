using System.Runtime.Intrinsics;

namespace Quantization.Tests.Kernels;

public class SimdTierTests
{
    /// <summary>The variable .ci/run sets for each rerun, so a misspelt DOTNET_Enable* switch cannot pass silently.</summary>
    private const string ExpectedTierVariable = "QUANTIZATION_EXPECTED_SIMD_TIER";

    [Fact]
    public void ActiveSimdTier_IsTheTierTheRunExpects()
    {
        string? expected = Environment.GetEnvironmentVariable(ExpectedTierVariable);
        SimdTier widest = Vector512.IsHardwareAccelerated ? SimdTier.Vector512
            : Vector256.IsHardwareAccelerated ? SimdTier.Vector256
            : Vector128.IsHardwareAccelerated ? SimdTier.Vector128
            : SimdTier.Scalar;
        Assert.Equal(widest, QuantizationPrimitives.ActiveSimdTier);
        if (!string.IsNullOrEmpty(expected))
        {
            Assert.Equal(Enum.Parse<SimdTier>(expected), QuantizationPrimitives.ActiveSimdTier);
        }
    }
}
