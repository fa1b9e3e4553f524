namespace Quantization.Tests.Kernels;

/// <summary>
/// The linear layer's kernels on every path this machine runs (the CI reruns these with narrower SIMD tiers): exact
/// int32 sums in W8A8, the same bits as the scalar specification in both modes.
/// </summary>
public class LinearKernelTests
{
    public static TheoryData<int, int> Shapes => new()
    {
        { 1, 1 }, { 1, 4 }, { 3, 5 }, { 31, 7 }, { 32, 64 }, { 33, 129 }, { 70, 258 }, { 100, 1027 },
    };

    /// <summary>Token counts that reach every tile of every path: 1 to 5, and whole and partial tiles of eight.</summary>
    private static readonly int[] TokenCounts = [1, 2, 3, 4, 5, 8, 9, 17];

    private static IEnumerable<Int8KernelPath> SupportedInt8Paths =>
        Enum.GetValues<Int8KernelPath>().Where(Int8KernelPaths.IsSupported);

    private static IEnumerable<SimdTier> SupportedTiers =>
        Enum.GetValues<SimdTier>().Where(tier => tier <= QuantizationPrimitives.ActiveSimdTier);

    [Fact]
    public void BestInt8Path_IsThePathTheRunExpects()
    {
        // .ci/run names the path each run's CPU flags and DOTNET_Enable* switch should give, so that a kernel which
        // silently stopped being chosen (the AVX-512 VNNI one refused executable pages, say) fails here.
        string? expected = Environment.GetEnvironmentVariable("QUANTIZATION_EXPECTED_INT8_PATH");
        Assert.True(Int8KernelPaths.IsSupported(Int8KernelPaths.Best));
        if (!string.IsNullOrEmpty(expected))
        {
            Assert.Equal(Enum.Parse<Int8KernelPath>(expected), Int8KernelPaths.Best);
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Int8Sums_EveryPathAndTokenCount_EqualScalarDotsIncludingExtremes(int outFeatures, int inFeatures)
    {
        Random random = new((outFeatures * 1000) + inFeatures);
        sbyte[] weight = RandomInt8(random, outFeatures * inFeatures);
        PackedInt8Weight packed = new(weight, outFeatures, inFeatures);
        sbyte[] activations = RandomInt8(random, TokenCounts.Max() * packed.PaddedInFeatures);
        for (int t = 0; t < TokenCounts.Max(); t++)
        {
            activations.AsSpan((t * packed.PaddedInFeatures) + inFeatures, packed.PaddedInFeatures - inFeatures).Clear();
        }

        foreach (Int8KernelPath path in SupportedInt8Paths)
        {
            foreach (int tokens in TokenCounts)
            {
                int length = tokens * packed.PaddedInFeatures;
                byte[] prepared = new byte[length * Int8PanelKernel.ActivationBytes(path)];
                Int8PanelKernel.PrepareActivations(path, activations.AsSpan(0, length), prepared);
                int[] sums = new int[tokens * PackedInt8Weight.PanelRows];
                for (int p = 0; p < packed.Panels; p++)
                {
                    Int8PanelKernel.Accumulate(path, packed, p, prepared, tokens, sums);
                    for (int t = 0; t < tokens; t++)
                    {
                        for (int c = 0; c < PackedInt8Weight.PanelRows; c++)
                        {
                            int n = (p * PackedInt8Weight.PanelRows) + c;
                            int expected = n < outFeatures
                                ? TestUtilities.ScalarReference.DotInt8(activations.AsSpan(t * packed.PaddedInFeatures, inFeatures), weight.AsSpan(n * inFeatures, inFeatures))
                                : 0;
                            Assert.True(expected == sums[(t * PackedInt8Weight.PanelRows) + c], $"{path}, {tokens} tokens: token {t}, channel {n} summed {sums[(t * PackedInt8Weight.PanelRows) + c]}, expected {expected}");
                        }
                    }
                }
            }
        }
    }

    [Fact]
    public void Int8Sums_AllExtremes_DoNotSaturate()
    {
        // -128 x -128 everywhere: every pair sum is 32768 (past int16) and the dot is 16384 x K.
        const int K = 4096;
        sbyte[] weight = Enumerable.Repeat(sbyte.MinValue, 2 * K).ToArray();
        weight.AsSpan(K).Fill(sbyte.MaxValue);
        PackedInt8Weight packed = new(weight, 2, K);
        sbyte[] activations = Enumerable.Repeat(sbyte.MinValue, K).ToArray();
        foreach (Int8KernelPath path in SupportedInt8Paths)
        {
            byte[] prepared = new byte[K * Int8PanelKernel.ActivationBytes(path)];
            Int8PanelKernel.PrepareActivations(path, activations, prepared);
            int[] sums = new int[PackedInt8Weight.PanelRows];
            Int8PanelKernel.Accumulate(path, packed, 0, prepared, 1, sums);
            Assert.Equal(128 * 128 * K, sums[0]);
            Assert.Equal(-128 * 127 * K, sums[1]);
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Forward_EveryPathAndTier_SameBitsAsScalarSpecification(int outFeatures, int inFeatures)
    {
        Random random = new((outFeatures * 7919) + inFeatures);
        float[] weights = Gaussian(random, outFeatures * inFeatures);
        float[] bias = Gaussian(random, outFeatures);
        QuantizedTensor tensor = QuantizedTensor.Quantize(weights, [outFeatures, inFeatures], QuantizationScheme.Int8PerChannel());
        QuantizedLinear layer = new(tensor, bias);
        sbyte[] q = tensor.GetInt8Data().ToArray();
        float[] scales = tensor.Parameters.Scales.ToArray();
        foreach (int tokens in TokenCounts)
        {
            float[] input = Gaussian(random, tokens * inFeatures);
            float[] expectedW8A8 = TestUtilities.ScalarReference.LinearW8A8(input, tokens, q, scales, bias, outFeatures, inFeatures);
            float[] expectedW8A16 = TestUtilities.ScalarReference.LinearW8A16(input, tokens, q, scales, bias, outFeatures, inFeatures);
            float[] actual = new float[tokens * outFeatures];
            foreach (Int8KernelPath path in SupportedInt8Paths)
            {
                layer.Int8Path = path;
                layer.Forward(input, actual, tokens, QuantizedLinearMode.W8A8);
                AssertSameBits(expectedW8A8, actual, $"W8A8 {path}, {tokens} tokens");
            }

            foreach (SimdTier tier in SupportedTiers)
            {
                layer.FloatTier = tier;
                layer.Forward(input, actual, tokens, QuantizedLinearMode.W8A16);
                AssertSameBits(expectedW8A16, actual, $"W8A16 {tier}, {tokens} tokens");
            }
        }
    }

    internal static void AssertSameBits(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}: output {i} is {actual[i]:R}, expected {expected[i]:R}");
        }
    }

    private static sbyte[] RandomInt8(Random random, int length)
    {
        sbyte[] values = new sbyte[length];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        if (length >= 2)
        {
            values[0] = sbyte.MinValue;
            values[^1] = sbyte.MaxValue;
            for (int i = 0; i < length; i += 7)
            {
                values[i] = (i / 7 % 2) == 0 ? sbyte.MinValue : sbyte.MaxValue;
            }
        }

        return values;
    }

    internal static float[] Gaussian(Random random, int length)
    {
        float[] values = new float[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        return values;
    }
}
