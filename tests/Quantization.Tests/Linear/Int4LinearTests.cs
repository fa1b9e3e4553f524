using static Quantization.Tests.TestUtilities.LinearReference;

namespace Quantization.Tests.Linear;

public class Int4LinearTests
{
    private const int Out = 300;
    private const int In = 515;

    [Theory]
    [InlineData(true, QuantizedLinearMode.W4A16, 0.99)]
    [InlineData(true, QuantizedLinearMode.W4A8, 0.99)]
    [InlineData(false, QuantizedLinearMode.W4A16, 0.99)]
    [InlineData(false, QuantizedLinearMode.W4A8, 0.99)]
    public void Forward_Group32_CosineToFp32MeetsTheBar(bool symmetric, QuantizedLinearMode mode, double bar)
    {
        const int N = 256, K = 1024, Tokens = 5;
        Random random = new(31);
        float[] weight = Gaussian(random, N * K, 0.02f);
        float[] input = Gaussian(random, Tokens * K, 1f);
        QuantizedLinear layer = new(QuantizedTensor.Quantize(weight, [N, K], QuantizationScheme.Int4PerGroup(32, symmetric)));
        Assert.Equal(symmetric ? QuantizedType.Int4 : QuantizedType.UInt4, layer.WeightType);
        float[] actual = new float[Tokens * N];
        layer.Forward(input, actual, Tokens, mode);
        double cosine = Cosine(Fp32Linear(weight, input, Tokens, N, K), actual);
        Assert.True(cosine >= bar, $"{mode}: cosine {cosine:F6} < {bar}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(6)]
    [InlineData(53)]
    public void Forward_Parallel_SameBitsAsSerial(int tokens)
    {
        Random random = new(tokens);
        QuantizedTensor weight = QuantizedTensor.Quantize(Gaussian(random, Out * In, 0.05f), [Out, In], QuantizationScheme.Int4PerGroup(64));
        QuantizedLinear layer = new(weight, Gaussian(random, Out, 1f));
        float[] input = Gaussian(random, tokens * In, 1f);
        foreach (QuantizedLinearMode mode in new[] { QuantizedLinearMode.W4A16, QuantizedLinearMode.W4A8 })
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
    public void Forward_Bias_IsAddedToEveryToken()
    {
        Random random = new(8);
        QuantizedTensor weight = QuantizedTensor.Quantize(Gaussian(random, Out * In, 0.05f), [Out, In], QuantizationScheme.Int4PerGroup(128, symmetric: false));
        float[] bias = Gaussian(random, Out, 1f);
        float[] input = Gaussian(random, 2 * In, 1f);
        QuantizedLinear withBias = new(weight, bias);
        QuantizedLinear without = new(weight);
        foreach (QuantizedLinearMode mode in new[] { QuantizedLinearMode.W4A16, QuantizedLinearMode.W4A8 })
        {
            float[] a = new float[2 * Out], b = new float[2 * Out];
            withBias.Forward(input, a, 2, mode);
            without.Forward(input, b, 2, mode);
            for (int i = 0; i < a.Length; i++)
            {
                Assert.Equal(b[i] + bias[i % Out], a[i], 1e-5f);
            }
        }
    }

    [Fact]
    public void Forward_ModeForTheOtherWeightWidth_ThrowsNamingTheModesToUse()
    {
        QuantizedLinear int4 = new(QuantizedTensor.Quantize(new float[2 * 16], [2, 16], QuantizationScheme.Int4PerGroup(16)));
        QuantizedLinear int8 = QuantizedLinear.Create(new float[2 * 16], 2, 16);
        ArgumentException e = Assert.Throws<ArgumentException>("mode", () => int4.Forward(new float[16], new float[2], 1, QuantizedLinearMode.W8A16));
        Assert.Contains("W4A16 or W4A8", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>("mode", () => int8.Forward(new float[16], new float[2], 1, QuantizedLinearMode.W4A8));
        Assert.Contains("W8A8 or W8A16", e.Message, StringComparison.Ordinal);
        Assert.Equal(QuantizedType.Int8, int8.WeightType);
    }

    [Fact]
    public void Constructor_UnsupportedFourBitLayouts_Throw()
    {
        float[] values = new float[4 * 48];
        QuantizedTensor group12 = QuantizedTensor.Quantize(values, [4, 48], QuantizationScheme.Int4PerGroup(12));
        ArgumentException e = Assert.Throws<ArgumentException>("weight", () => new QuantizedLinear(group12));
        Assert.Contains("multiple of 8", e.Message, StringComparison.Ordinal);
        QuantizedTensor alongOutputs = QuantizedTensor.Quantize(values, [4, 48], new QuantizationScheme(QuantizedType.Int4, true, QuantizationGranularity.PerGroup(2, axis: 0)));
        Assert.Throws<ArgumentException>("weight", () => new QuantizedLinear(alongOutputs));
        QuantizedTensor threeD = QuantizedTensor.Quantize(values, [4, 3, 16], QuantizationScheme.Int4PerGroup(16));
        Assert.Throws<ArgumentException>("weight", () => new QuantizedLinear(threeD));
    }

    [Fact]
    public void Forward_NonFiniteInputOrZeroTokens_AsForInt8()
    {
        QuantizedLinear layer = new(QuantizedTensor.Quantize(new float[3 * 10], [3, 10], QuantizationScheme.Int4PerGroup(16)));
        layer.Forward([], [], 0, QuantizedLinearMode.W4A8);
        float[] input = new float[2 * 10];
        input[13] = float.NaN;
        float[] output = Enumerable.Repeat(7f, 6).ToArray();
        foreach (QuantizedLinearMode mode in new[] { QuantizedLinearMode.W4A16, QuantizedLinearMode.W4A8 })
        {
            NonFiniteValueException e = Assert.Throws<NonFiniteValueException>(() => layer.Forward(input, output, 2, mode));
            Assert.Contains("index 13", e.Message, StringComparison.Ordinal);
            Assert.All(output, v => Assert.Equal(7f, v));
        }
    }

    [Fact]
    public void Forward_ZeroRangeGroups_GiveTheBias()
    {
        // All-zero rows quantize with scale 1 and zero point 0 (or 8 for UInt4): every weight dequantizes to 0.
        float[] bias = [1.5f, -2f];
        foreach (bool symmetric in new[] { true, false })
        {
            QuantizedLinear layer = new(QuantizedTensor.Quantize(new float[2 * 40], [2, 40], QuantizationScheme.Int4PerGroup(32, symmetric)), bias);
            float[] input = Gaussian(new Random(3), 40, 1f);
            float[] output = new float[2];
            foreach (QuantizedLinearMode mode in new[] { QuantizedLinearMode.W4A16, QuantizedLinearMode.W4A8 })
            {
                layer.Forward(input, output, 1, mode);
                Assert.Equal(bias, output);
            }
        }
    }
}
