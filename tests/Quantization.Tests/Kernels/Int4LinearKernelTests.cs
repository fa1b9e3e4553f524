namespace Quantization.Tests.Kernels;

/// <summary>
/// The 4-bit linear kernels on every tier and path this machine runs (the CI reruns these with narrower SIMD tiers):
/// W4A16 and W4A8 give the bits of their scalar specifications, for symmetric Int4, asymmetric UInt4 and asymmetric
/// Int4 weights, groups of 8 to 256 features, partial last groups, odd input widths, per channel and per tensor.
/// </summary>
public class Int4LinearKernelTests
{
    /// <summary>Out features, in features, group size (0: per output channel, -1: per tensor).</summary>
    public static TheoryData<int, int, int> Shapes => new()
    {
        { 1, 1, 16 }, { 3, 5, 16 }, { 31, 7, 32 }, { 32, 64, 16 }, { 33, 129, 32 }, { 70, 258, 64 }, { 64, 200, 16 },
        { 40, 300, 256 }, { 100, 1027, 128 }, { 35, 96, 8 }, { 17, 77, 0 }, { 9, 40, -1 },
    };

    /// <summary>Token counts that reach every tile of every path: 1 to 5, partial quads, and more than a block of 48.</summary>
    private static readonly int[] TokenCounts = [1, 2, 3, 4, 5, 8, 9, 53];

    private static IEnumerable<SimdTier> SupportedTiers =>
        Enum.GetValues<SimdTier>().Where(tier => tier <= QuantizationPrimitives.ActiveSimdTier);

    private static IEnumerable<Int8KernelPath> SupportedW4A8Paths =>
        Enum.GetValues<Int8KernelPath>().Where(Int4Int8Kernel.IsSupported);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Forward_EveryTierAndPath_SameBitsAsScalarSpecification(int outFeatures, int inFeatures, int groupSize)
    {
        Random random = new((outFeatures * 7919) + inFeatures + groupSize);
        float[] weights = Gaussian(random, outFeatures * inFeatures);
        float[] bias = Gaussian(random, outFeatures);
        QuantizationGranularity granularity = groupSize switch
        {
            0 => QuantizationGranularity.PerChannel(0),
            -1 => QuantizationGranularity.PerTensor,
            _ => QuantizationGranularity.PerGroup(groupSize),
        };
        QuantizationScheme[] schemes =
        [
            new(QuantizedType.Int4, symmetric: true, granularity, range: QuantizationRange.Full),
            new(QuantizedType.UInt4, symmetric: false, granularity),
            new(QuantizedType.Int4, symmetric: false, granularity),
        ];
        foreach (QuantizationScheme scheme in schemes)
        {
            QuantizedTensor tensor = QuantizedTensor.Quantize(weights, [outFeatures, inFeatures], scheme);
            QuantizedLinear layer = new(tensor, bias);
            Int4Reference reference = new(tensor);
            foreach (int tokens in TokenCounts)
            {
                float[] input = Gaussian(random, tokens * inFeatures);
                float[] expectedW4A16 = reference.W4A16(input, tokens, bias);
                float[] expectedW4A8 = reference.W4A8(input, tokens, bias);
                float[] actual = new float[tokens * outFeatures];
                foreach (SimdTier tier in SupportedTiers)
                {
                    layer.FloatTier = tier;
                    layer.Forward(input, actual, tokens, QuantizedLinearMode.W4A16);
                    LinearKernelTests.AssertSameBits(expectedW4A16, actual, $"W4A16 {scheme.Type} {scheme.Granularity} {tier}, {tokens} tokens");
                }

                foreach (Int8KernelPath path in SupportedW4A8Paths)
                {
                    layer.Int4Path = path;
                    layer.Forward(input, actual, tokens, QuantizedLinearMode.W4A8);
                    LinearKernelTests.AssertSameBits(expectedW4A8, actual, $"W4A8 {scheme.Type} {scheme.Granularity} {path}, {tokens} tokens");
                }
            }
        }
    }

    [Fact]
    public void Forward_ExtremeCodesAndActivations_ExactOnEveryPath()
    {
        // Codes 0 and 15 against activations of +-127 (the largest int8 pair sums: 2 x 15 x 127 = 3810) over a 256-group.
        const int N = 64, K = 512;
        byte[] packed = new byte[N * K / 2];
        for (int i = 0; i < packed.Length; i++)
        {
            packed[i] = (byte)((i / 3 % 2) == 0 ? 0xFF : 0x0F);
        }

        QuantizationScheme scheme = new(QuantizedType.UInt4, symmetric: false, QuantizationGranularity.PerGroup(256));
        QuantizationParameters parameters = new(Enumerable.Repeat(0.5f, N * 2).ToArray(), Enumerable.Repeat(0, N * 2).ToArray());
        QuantizedTensor tensor = new(packed, [N, K], scheme, parameters);
        QuantizedLinear layer = new(tensor);
        float[] input = Enumerable.Range(0, 3 * K).Select(i => (i % 5) == 0 ? -3f : 3f).ToArray();
        Int4Reference reference = new(tensor);
        float[] expected = reference.W4A8(input, 3, new float[N]);
        float[] actual = new float[3 * N];
        foreach (Int8KernelPath path in SupportedW4A8Paths)
        {
            layer.Int4Path = path;
            layer.Forward(input, actual, 3, QuantizedLinearMode.W4A8);
            LinearKernelTests.AssertSameBits(expected, actual, $"W4A8 {path}");
        }
    }

    private static float[] Gaussian(Random random, int length)
    {
        float[] values = new float[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        return values;
    }

    /// <summary>
    /// The scalar specification of the 4-bit modes (see <see cref="QuantizedLinear"/>): W4A16 dequantizes each weight to
    /// <c>(float)(q - zeroPoint) * scale</c> and sums even and odd features in two fused multiply-add chains over the input
    /// padded to a multiple of eight with zeros; W4A8 sums each group exactly in integers and scales per group.
    /// </summary>
    private sealed class Int4Reference
    {
        private readonly int _out;
        private readonly int _in;
        private readonly int[] _q;
        private readonly float[] _scales;
        private readonly int[] _zeroPoints;
        private readonly int _groupSize;
        private readonly int _groups;
        private readonly bool _perGroup;
        private readonly bool _perChannel;

        public Int4Reference(QuantizedTensor tensor)
        {
            _out = tensor.Shape[0];
            _in = tensor.Shape[1];
            _q = tensor.Scheme.Type == QuantizedType.Int4
                ? Array.ConvertAll(tensor.GetInt4Data(), v => (int)v)
                : Array.ConvertAll(tensor.GetUInt4Data(), v => (int)v);
            _scales = tensor.Parameters.Scales.ToArray();
            _zeroPoints = tensor.Parameters.ZeroPoints.ToArray();
            QuantizationGranularity granularity = tensor.Scheme.Granularity;
            _perGroup = granularity.Kind == GranularityKind.PerGroup;
            _perChannel = granularity.Kind == GranularityKind.PerChannel;
            _groupSize = _perGroup ? granularity.GroupSize : _in;
            _groups = (_in + _groupSize - 1) / _groupSize;

            // The weight the kernels use is exactly the library's dequantized weight.
            float[] dequantized = tensor.Dequantize();
            for (int n = 0; n < _out; n++)
            {
                for (int k = 0; k < _in; k++)
                {
                    Assert.Equal(BitConverter.SingleToInt32Bits(dequantized[(n * _in) + k]), BitConverter.SingleToInt32Bits(Weight(n, k)));
                }
            }
        }

        public float[] W4A16(float[] input, int tokens, float[] bias)
        {
            int padded = (_in + 7) / 8 * 8;
            float[] output = new float[tokens * _out];
            for (int t = 0; t < tokens; t++)
            {
                for (int n = 0; n < _out; n++)
                {
                    float[] a = new float[2];
                    for (int k = 0; k < padded; k++)
                    {
                        float w = k < _in ? Weight(n, k) : 0f;
                        float x = k < _in ? input[(t * _in) + k] : 0f;
                        a[k % 2] = MathF.FusedMultiplyAdd(w, x, a[k % 2]);
                    }

                    output[(t * _out) + n] = (a[0] + a[1]) + bias[n];
                }
            }

            return output;
        }

        public float[] W4A8(float[] input, int tokens, float[] bias)
        {
            float[] output = new float[tokens * _out];
            sbyte[] x = new sbyte[_in];
            float[] tokenScale = new float[1];
            sbyte[] zeroPoint = new sbyte[1];
            for (int t = 0; t < tokens; t++)
            {
                QuantizationPrimitives.QuantizeDynamic(input.AsSpan(t * _in, _in), [_in], QuantizationScheme.Int8PerTensor(), x, tokenScale, zeroPoint);
                for (int n = 0; n < _out; n++)
                {
                    float total = 0;
                    for (int g = 0; g < _groups; g++)
                    {
                        int sum = 0;
                        for (int k = g * _groupSize; k < Math.Min(_in, (g + 1) * _groupSize); k++)
                        {
                            sum += (_q[(n * _in) + k] - _zeroPoints[Parameter(n, g)]) * x[k];
                        }

                        total = MathF.FusedMultiplyAdd(sum, _scales[Parameter(n, g)], total);
                    }

                    output[(t * _out) + n] = MathF.FusedMultiplyAdd(total, tokenScale[0], bias[n]);
                }
            }

            return output;
        }

        private int Parameter(int n, int g) => _perGroup ? (n * _groups) + g : _perChannel ? n : 0;

        private float Weight(int n, int k) => (float)(_q[(n * _in) + k] - _zeroPoints[Parameter(n, k / _groupSize)]) * _scales[Parameter(n, k / _groupSize)];
    }
}
