using static Quantization.Tests.TestUtilities.LinearReference;

namespace Quantization.Tests.Linear;

public class QuantizedLinearTests
{
    private const int Out = 300;
    private const int In = 515;

    [Theory]
    [InlineData(QuantizedLinearMode.W8A16, 0.9995)]
    [InlineData(QuantizedLinearMode.W8A8, 0.999)]
    public void Forward_GaussianWithOutliers_CosineToFp32MeetsTheBar(QuantizedLinearMode mode, double bar)
    {
        // Weights: Gaussian, 0.2% of entries 6x larger. Activations: Gaussian, 4 outlier features 10x larger in every
        // token (the channel outliers of transformer activations). K = 1024, N = 512, 8 tokens.
        const int N = 512, K = 1024, Tokens = 8;
        Random random = new(2024);
        float[] weight = Gaussian(random, N * K, 0.02f);
        for (int i = 0; i < weight.Length; i++)
        {
            if (random.NextDouble() < 0.002)
            {
                weight[i] *= 6;
            }
        }

        float[] input = Gaussian(random, Tokens * K, 1f);
        int[] outlierFeatures = [17, 300, 301, 900];
        for (int t = 0; t < Tokens; t++)
        {
            foreach (int k in outlierFeatures)
            {
                input[(t * K) + k] *= 10;
            }
        }

        QuantizedLinear layer = QuantizedLinear.Create(weight, N, K);
        float[] actual = new float[Tokens * N];
        layer.Forward(input, actual, Tokens, mode);
        double[] expected = Fp32Linear(weight, input, Tokens, N, K);
        double cosine = Cosine(expected, actual);
        Assert.True(cosine >= bar, $"{mode}: cosine {cosine:F6} < {bar}");
    }

    [Fact]
    public void Forward_Bias_IsAddedToEveryToken()
    {
        Random random = new(5);
        float[] weight = Gaussian(random, Out * In, 0.05f);
        float[] bias = Gaussian(random, Out, 1f);
        float[] input = Gaussian(random, 3 * In, 1f);
        QuantizedLinear withBias = QuantizedLinear.Create(weight, Out, In, bias);
        QuantizedLinear without = QuantizedLinear.Create(weight, Out, In);
        Assert.True(withBias.HasBias);
        Assert.False(without.HasBias);
        foreach (QuantizedLinearMode mode in new[] { QuantizedLinearMode.W8A8, QuantizedLinearMode.W8A16 })
        {
            float[] a = new float[3 * Out], b = new float[3 * Out];
            withBias.Forward(input, a, 3, mode);
            without.Forward(input, b, 3, mode);
            for (int i = 0; i < a.Length; i++)
            {
                Assert.Equal(b[i] + bias[i % Out], a[i], 1e-5f);
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(37)]
    public void Forward_Parallel_SameBitsAsSerial(int tokens)
    {
        Random random = new(tokens);
        QuantizedLinear layer = QuantizedLinear.Create(Gaussian(random, Out * In, 0.05f), Out, In, Gaussian(random, Out, 1f));
        float[] input = Gaussian(random, tokens * In, 1f);
        foreach (QuantizedLinearMode mode in new[] { QuantizedLinearMode.W8A8, QuantizedLinearMode.W8A16 })
        {
            layer.MaxDegreeOfParallelism = 1;
            float[] serial = new float[tokens * Out];
            layer.Forward(input, serial, tokens, mode);
            foreach (int degree in new[] { 2, 3, 16 })
            {
                layer.MaxDegreeOfParallelism = degree;
                float[] parallel = new float[tokens * Out];
                layer.Forward(input, parallel, tokens, mode);
                Kernels.LinearKernelTests.AssertSameBits(serial, parallel, $"{mode}, degree {degree}");
            }
        }
    }

    [Fact]
    public void Forward_MoreHelpersThanProcessorsAndConcurrentCalls_SameBitsAsSerial()
    {
        // Four participants claiming and stealing units, whatever the machine's processors; then calls from several
        // threads at once, of which one holds the helpers and the others run alone.
        Random random = new(11);
        QuantizedLinear int8 = QuantizedLinear.Create(Gaussian(random, Out * In, 0.05f), Out, In, Gaussian(random, Out, 1f));
        QuantizedLinear int4 = new(QuantizedTensor.Quantize(Gaussian(random, Out * In, 0.05f), [Out, In], QuantizationScheme.Int4PerGroup(32)));
        (QuantizedLinear Layer, QuantizedLinearMode Mode)[] cases = [(int8, QuantizedLinearMode.W8A8), (int8, QuantizedLinearMode.W8A16), (int4, QuantizedLinearMode.W4A16), (int4, QuantizedLinearMode.W4A8)];
        int limit = PanelTeam.HelperLimit;
        try
        {
            PanelTeam.HelperLimit = 3;
            foreach (int tokens in new[] { 1, 5 })
            {
                float[] input = Gaussian(random, tokens * In, 1f);
                foreach ((QuantizedLinear layer, QuantizedLinearMode mode) in cases)
                {
                    layer.MaxDegreeOfParallelism = 1;
                    float[] serial = new float[tokens * Out];
                    layer.Forward(input, serial, tokens, mode);
                    layer.MaxDegreeOfParallelism = 4;
                    float[][] parallel = [.. Enumerable.Range(0, 4).Select(_ => new float[tokens * Out])];
                    Parallel.For(0, 4, i =>
                    {
                        for (int repeat = 0; repeat < 25; repeat++)
                        {
                            layer.Forward(input, parallel[i], tokens, mode);
                        }
                    });
                    foreach (float[] result in parallel)
                    {
                        Kernels.LinearKernelTests.AssertSameBits(serial, result, $"{mode}, {tokens} tokens");
                    }
                }
            }
        }
        finally
        {
            PanelTeam.HelperLimit = limit;
        }
    }

    [Fact]
    public void Constructor_PerTensorWeight_UsesTheOneScaleForEveryChannel()
    {
        Random random = new(9);
        float[] weight = Gaussian(random, 40 * 24, 1f);
        QuantizedTensor tensor = QuantizedTensor.Quantize(weight, [40, 24], QuantizationScheme.Int8PerTensor());
        QuantizedLinear layer = new(tensor);
        float[] dequantized = tensor.Dequantize();
        float[] input = Gaussian(random, 24, 1f);
        float[] actual = new float[40];
        layer.Forward(input, actual, 1, QuantizedLinearMode.W8A16);
        double[] expected = Fp32Linear(dequantized, input, 1, 40, 24);
        for (int n = 0; n < 40; n++)
        {
            Assert.Equal(expected[n], actual[n], 1e-4);
        }
    }

    [Theory]
    [InlineData(QuantizedLinearMode.W8A8, float.NaN)]
    [InlineData(QuantizedLinearMode.W8A16, float.NaN)]
    [InlineData(QuantizedLinearMode.W8A16, float.NegativeInfinity)]
    public void Forward_NonFiniteInput_ThrowsNamingTheIndexAndLeavesOutput(QuantizedLinearMode mode, float bad)
    {
        QuantizedLinear layer = QuantizedLinear.Create(new float[4 * 3], 4, 3);
        float[] input = new float[2 * 3];
        input[4] = bad;
        float[] output = Enumerable.Repeat(7f, 8).ToArray();
        NonFiniteValueException e = Assert.Throws<NonFiniteValueException>(() => layer.Forward(input, output, 2, mode));
        Assert.Contains("index 4", e.Message, StringComparison.Ordinal);
        Assert.All(output, v => Assert.Equal(7f, v));
    }

    [Fact]
    public void Forward_ZeroTokens_DoesNothing()
    {
        QuantizedLinear layer = QuantizedLinear.Create(new float[6], 2, 3);
        layer.Forward([], [], 0, QuantizedLinearMode.W8A8);
        Assert.Equal(3, layer.InFeatures);
        Assert.Equal(2, layer.OutFeatures);
    }

    [Fact]
    public void Arguments_BadShapesAndValues_ThrowClearExceptions()
    {
        QuantizedLinear layer = QuantizedLinear.Create(new float[6], 2, 3);
        Assert.Throws<ArgumentException>("input", () => layer.Forward(new float[5], new float[4], 2, QuantizedLinearMode.W8A8));
        Assert.Throws<ArgumentException>("output", () => layer.Forward(new float[6], new float[3], 2, QuantizedLinearMode.W8A16));
        Assert.Throws<ArgumentOutOfRangeException>("tokens", () => layer.Forward([], [], -1, QuantizedLinearMode.W8A8));
        Assert.Throws<ArgumentOutOfRangeException>("mode", () => layer.Forward(new float[3], new float[2], 1, (QuantizedLinearMode)7));
        Assert.Throws<ArgumentOutOfRangeException>("value", () => layer.MaxDegreeOfParallelism = 0);
        Assert.Throws<ArgumentException>("weight", () => QuantizedLinear.Create(new float[5], 2, 3));
        Assert.Throws<ArgumentOutOfRangeException>("outFeatures", () => QuantizedLinear.Create([], 0, 3));
        Assert.Throws<ArgumentOutOfRangeException>("inFeatures", () => QuantizedLinear.Create([], 2, 0));
        Assert.Throws<ArgumentException>("bias", () => QuantizedLinear.Create(new float[6], 2, 3, new float[3]));
        Assert.Throws<NonFiniteValueException>(() => QuantizedLinear.Create(new float[6], 2, 3, [1f, float.NaN]));
        Assert.Throws<NonFiniteValueException>(() => QuantizedLinear.Create([0, 0, 0, 0, float.PositiveInfinity, 0], 2, 3));
        Assert.Throws<ArgumentNullException>("weight", () => new QuantizedLinear(null!));
    }

    [Theory]
    [InlineData(QuantizedType.UInt8, false, 0, new[] { 2, 3 })]
    [InlineData(QuantizedType.Int8, false, 0, new[] { 2, 3 })]
    [InlineData(QuantizedType.Int8, true, 1, new[] { 2, 3 })]
    [InlineData(QuantizedType.Int8, true, 0, new[] { 2, 3, 1 })]
    [InlineData(QuantizedType.Int8, true, 0, new[] { 6 })]
    public void Constructor_WeightNotSymmetricInt8PerOutputChannelMatrix_Throws(QuantizedType type, bool symmetric, int axis, int[] shape)
    {
        QuantizationScheme scheme = new(type, symmetric, QuantizationGranularity.PerChannel(axis));
        QuantizedTensor tensor = QuantizedTensor.Quantize(new float[6], shape, scheme);
        Assert.Throws<ArgumentException>("weight", () => new QuantizedLinear(tensor));
    }

    [Fact]
    public void Constructor_SymmetricSchemeWithNonZeroZeroPoint_Throws()
    {
        QuantizedTensor tensor = new(new byte[6], [2, 3], QuantizationScheme.Int8PerChannel(), new QuantizationParameters([1f, 1f], [0, 3]));
        Assert.Throws<ArgumentException>("weight", () => new QuantizedLinear(tensor));
    }
}
