namespace Quantization.Tests;

/// <summary>Bad arguments get a clear exception that names the argument and the problem.</summary>
public class ValidationTests
{
    private static readonly float[] Twelve = Enumerable.Range(0, 12).Select(i => i * 0.25f).ToArray();

    [Fact]
    public void PerTensor_MismatchedLengths_Throw()
    {
        ArgumentException error = Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Quantize(Twelve, new sbyte[11], 0.1f));
        Assert.Equal("destination", error.ParamName);
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Dequantize(new sbyte[3], new float[4], 0.1f));
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Dequantize(new byte[3], new float[2], 0.1f, 0));
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(-1f)]
    [InlineData(0f)]
    public void BadScale_Throws(float scale)
    {
        ArgumentOutOfRangeException error = Assert.Throws<ArgumentOutOfRangeException>(() => QuantizationPrimitives.Quantize(Twelve, new byte[12], scale, 0));
        Assert.Equal("scale", error.ParamName);
        if (scale != 0f)
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => QuantizationPrimitives.Dequantize(new sbyte[2], new float[2], scale));
            Assert.Throws<ArgumentOutOfRangeException>(() => new QuantizationParameters(scale));
        }
    }

    [Fact]
    public void Shapes_BadOrMismatched_Throw()
    {
        sbyte[] destination = new sbyte[12];
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Quantize(Twelve, [], QuantizationGranularity.PerTensor, [1f], [], destination));
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Quantize(Twelve, [3, -4], QuantizationGranularity.PerTensor, [1f], [], destination));
        ArgumentException count = Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Quantize(Twelve, [3, 5], QuantizationGranularity.PerTensor, [1f], [], destination));
        Assert.Contains("15 elements", count.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.Quantize(Twelve, [65536, 65536], QuantizationGranularity.PerTensor, [1f], [], destination));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(-3)]
    public void Axis_OutsideTheShape_Throws(int axis)
    {
        ArgumentException error = Assert.Throws<ArgumentException>(
            () => QuantizationPrimitives.Quantize(Twelve, [3, 4], QuantizationGranularity.PerChannel(axis), [1f, 1f, 1f], [], new sbyte[12]));
        Assert.Contains("Axis", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void GroupSize_NotDividingTheAxis_NeedsAScaleForThePartialGroup()
    {
        // Rows of 4 in groups of 3: two groups a row (3 + 1), six scales in all, as ONNX blocked quantization counts them.
        ArgumentException error = Assert.Throws<ArgumentException>(
            () => QuantizationPrimitives.Quantize(Twelve, [3, 4], QuantizationGranularity.PerGroup(3), [1f, 1f, 1f], [], new sbyte[12]));
        Assert.Contains("needs 6 scales", error.Message, StringComparison.Ordinal);
        sbyte[] quantized = new sbyte[12];
        QuantizationPrimitives.Quantize(Twelve, [3, 4], QuantizationGranularity.PerGroup(3), [1f, 2f, 1f, 2f, 1f, 2f], [], quantized);
        Assert.Equal((sbyte)MathF.Round(Twelve[7] / 2f, MidpointRounding.ToEven), quantized[7]);
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizationGranularity.PerGroup(0));
    }

    [Fact]
    public void ParameterCounts_Mismatched_Throw()
    {
        ArgumentException scales = Assert.Throws<ArgumentException>(
            () => QuantizationPrimitives.Quantize(Twelve, [3, 4], QuantizationGranularity.PerChannel(1), [1f, 1f, 1f], [], new sbyte[12]));
        Assert.Equal("scales", scales.ParamName);
        Assert.Contains("needs 4 scales", scales.Message, StringComparison.Ordinal);
        ArgumentException zeroPoints = Assert.Throws<ArgumentException>(
            () => QuantizationPrimitives.Quantize(Twelve, [3, 4], QuantizationGranularity.PerChannel(0), [1f, 1f, 1f], [0, 0], new sbyte[12]));
        Assert.Equal("zeroPoints", zeroPoints.ParamName);
        Assert.Throws<ArgumentException>(
            () => QuantizationPrimitives.QuantizeDynamic(Twelve, [3, 4], QuantizationScheme.Int8PerChannel(), new sbyte[12], new float[3], new sbyte[2]));
        Assert.Throws<ArgumentOutOfRangeException>(
            () => QuantizationPrimitives.Quantize(Twelve, [3, 4], QuantizationGranularity.PerChannel(0), [1f, -1f, 1f], [], new sbyte[12]));
    }

    [Fact]
    public void Schemes_InvalidCombinations_Throw()
    {
        Assert.Throws<ArgumentException>(() => new QuantizationScheme(QuantizedType.UInt8, false, QuantizationGranularity.PerTensor, range: QuantizationRange.Restricted));
        Assert.Throws<ArgumentException>(() => new QuantizationScheme(QuantizedType.Int8, false, QuantizationGranularity.PerGroup(32), NumericConvention.GgmlQ8_0));
        Assert.Throws<ArgumentException>(() => new QuantizationScheme(QuantizedType.Int8, true, QuantizationGranularity.PerGroup(32), NumericConvention.GgmlQ8_0, QuantizationRange.Full));
        Assert.Throws<ArgumentOutOfRangeException>(() => new QuantizationScheme((QuantizedType)42, true, QuantizationGranularity.PerTensor));
        ArgumentException wrongType = Assert.Throws<ArgumentException>(
            () => QuantizationPrimitives.QuantizeDynamic(Twelve, [12], QuantizationScheme.UInt8PerTensorAsymmetric(), new sbyte[12], new float[1], new sbyte[1]));
        Assert.Equal("scheme", wrongType.ParamName);
        Assert.Throws<ArgumentNullException>(() => QuantizedTensor.Quantize(Twelve, [12], null!));
    }

    [Fact]
    public void ComputeParameters_BadRanges_Throw()
    {
        Assert.Throws<ArgumentException>(() => NumericConvention.Onnx.ComputeParameters(float.NaN, 1f, QuantizedType.Int8, true));
        Assert.Throws<ArgumentException>(() => NumericConvention.Onnx.ComputeParameters(0f, float.PositiveInfinity, QuantizedType.Int8, true));
        Assert.Throws<ArgumentException>(() => NumericConvention.Onnx.ComputeParameters(2f, 1f, QuantizedType.Int8, true));
        Assert.Throws<ArgumentException>(() => NumericConvention.Onnx.ComputeParameters(-1f, 1f, 1, 255, false));
        Assert.Throws<ArgumentException>(() => NumericConvention.GgmlQ8_0.ComputeParameters(-1f, 1f, QuantizedType.Int8, false));
    }

    [Fact]
    public void QuantizedTensor_InconsistentParts_Throw()
    {
        QuantizationScheme scheme = QuantizationScheme.Int8PerChannel();
        Assert.Throws<ArgumentException>(() => new QuantizedTensor(new byte[11], [3, 4], scheme, new QuantizationParameters([1f, 1f, 1f], [])));
        Assert.Throws<ArgumentException>(() => new QuantizedTensor(new byte[12], [3, 4], scheme, new QuantizationParameters(1f)));
        ArgumentException zeroPoint = Assert.Throws<ArgumentException>(
            () => new QuantizedTensor(new byte[12], [3, 4], scheme, new QuantizationParameters([1f, 1f, 1f], [0, -128, 0]), "fc.weight"));
        Assert.Contains("'fc.weight'", zeroPoint.Message, StringComparison.Ordinal);
        Assert.Contains("-128", zeroPoint.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new QuantizationParameters([1f, 2f], [0]));
        Assert.Throws<ArgumentException>(() => new QuantizedTensor(new byte[12], [12], QuantizationScheme.Int4PerGroup(4), new QuantizationParameters([1f, 1f, 1f], [])));
        Assert.Throws<InvalidOperationException>(() => QuantizedTensor.Quantize(Twelve, [12], QuantizationScheme.Int4PerGroup(4)).GetUInt4Data());
        Assert.Throws<InvalidOperationException>(() => QuantizedTensor.Quantize(Twelve, [12], QuantizationScheme.Int4PerGroup(4, symmetric: false)).GetInt4Data());
        Assert.Throws<ArgumentException>(() => QuantizedTensor.Quantize(Twelve, [13], scheme));
        Assert.Throws<ArgumentException>(() => QuantizedTensor.Quantize(Twelve, [3, 4], scheme).Dequantize(new float[11]));
        Assert.Throws<InvalidOperationException>(() => QuantizedTensor.Quantize(Twelve, [12], QuantizationScheme.UInt8PerTensorAsymmetric()).GetInt8Data().ToArray());
    }

    [Fact]
    public void Exceptions_NameTheCallersArgument()
    {
        float[] values = [1f, float.NaN, 2f, 3f];
        Assert.Equal("values", Assert.Throws<NonFiniteValueException>(() => QuantizedTensor.Quantize(values, [4], QuantizationScheme.Int8PerTensor())).ParamName);
        Assert.Equal("values", Assert.Throws<NonFiniteValueException>(() => QuantizedTensor.Quantize(values, [4], QuantizationScheme.Int8PerTensor(), new QuantizationParameters(1f))).ParamName);
        Assert.Equal("values", Assert.Throws<NonFiniteValueException>(() => new MinMaxObserver(QuantizationScheme.Int8PerTensor()).Observe(values, [4])).ParamName);
        Assert.Equal("parameters", Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedTensor.Quantize([1f], [1], QuantizationScheme.Int8PerTensor(), new QuantizationParameters(0f))).ParamName);
        Assert.Equal("values", Assert.Throws<ArgumentException>(() => QuantizedTensor.Quantize(Enumerable.Repeat(1e7f, 32).ToArray(), [32], QuantizationScheme.GgmlQ8_0())).ParamName);
        Assert.Equal("type", Assert.Throws<ArgumentException>(() => NumericConvention.GgmlQ8_0.ComputeParameters(-1f, 1f, QuantizedType.UInt8, true)).ParamName);
    }

    [Fact]
    public void ScalarQuantize_ValidatesLikeTheKernels()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => NumericConvention.Onnx.Quantize(1f, 0f, 0, -128, 127));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumericConvention.Torch.Quantize(1f, float.NaN, 0, -128, 127));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumericConvention.Onnx.Quantize(1f, 1f, 0, 127, -128));
        Assert.Equal(0, NumericConvention.GgmlQ8_0.Quantize(5f, 0f, 0, -127, 127));
    }

    [Fact]
    public void SubnormalScale_ForReciprocalConventions_KeepsZeroAtTheZeroPoint()
    {
        sbyte[] destination = new sbyte[4];
        QuantizationPrimitives.Quantize([0f, 1f, -1f, 0f], destination, 1e-40f, 3, NumericConvention.Torch);
        Assert.Equal([3, 127, -128, 3], destination);
        Assert.Equal(7, new QuantizationScheme(QuantizedType.UInt4, true, QuantizationGranularity.PerTensor, NumericConvention.Torch).Convention.ComputeParameters(-1f, 1f, QuantizedType.UInt4, true).ZeroPoint);
    }

    [Fact]
    public void HostileShapesAndNames_AreHandled()
    {
        // An empty tensor whose other dimensions are huge: no hang, no giant parameter arrays.
        MinMaxObserver observer = new(QuantizationScheme.Int8PerChannel(-1));
        observer.Observe([], [2_000_000_000, 0]);
        Assert.Equal(0, observer.ObservedCount);
        Assert.Throws<ArgumentException>(() => new MinMaxObserver(QuantizationScheme.Int8PerChannel(-1)).Observe([], [0, int.MaxValue]));

        MovingAverageMinMaxObserver average = new(QuantizationScheme.Int8PerTensor(), 0.5f);
        average.Observe([3e38f], [1]);
        average.Observe([-3e38f], [1]);
        Assert.True(float.IsFinite(average.Minimums[0]) && float.IsFinite(average.Maximums[0]));

        Assert.False(new NamePattern("a.weight").IsMatch("a.weight\n"));
        Assert.Equal("tensors", Assert.Throws<ArgumentException>(() => new RtnQuantizer().Quantize([new NamedTensor("w", new float[4], null!)])).ParamName);
        Assert.Equal("quantized", Assert.Throws<ArgumentException>(() => TensorErrorReport.Compare([1f, 2f], QuantizedTensor.Quantize([1f], [1], QuantizationScheme.Int8PerTensor()))).ParamName);
    }
}
