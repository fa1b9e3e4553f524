using Quantization.Tests.TestUtilities;

namespace Quantization.Tests;

/// <summary>
/// Golden values from each peer's published formula (ONNX Runtime quant_utils.compute_scale_zp and MLAS QuantizeLinear,
/// torch.ao _calculate_qparams and quantize_val, ggml quantize_row_q8_0_ref, Golden Stick's (max - min) / (qmax - qmin)).
/// </summary>
public class NumericConventionGoldenTests
{
    private const float TorchEpsilon = 1.1920929e-07f;

    [Fact]
    public void PlusMinusAbsmax_TorchAndGoldenStickReachMinus128_OnnxAndGgmlStayAt127()
    {
        float[] values = [-127.5f, 127.5f];
        Assert.Equal([-127, 127], QuantizeDynamic(values, NumericConvention.Onnx));
        Assert.Equal([-128, 127], QuantizeDynamic(values, NumericConvention.Torch));
        Assert.Equal([-127, 127], QuantizeDynamic(values, NumericConvention.GgmlQ8_0));
        Assert.Equal([-128, 127], QuantizeDynamic(values, NumericConvention.GoldenStick));

        Assert.Equal(new ScaleAndZeroPoint((float)(255.0 / 254.0), 0), NumericConvention.Onnx.ComputeParameters(-127.5f, 127.5f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(1f, 0), NumericConvention.Torch.ComputeParameters(-127.5f, 127.5f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(1.00390625f, 0), NumericConvention.GgmlQ8_0.ComputeParameters(-127.5f, 127.5f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(1f, 0), NumericConvention.GoldenStick.ComputeParameters(-127.5f, 127.5f, QuantizedType.Int8, symmetric: true));
    }

    [Fact]
    public void ExactTies_RoundHalfToEvenExceptGgmlAwayFromZero()
    {
        float[] ties = [0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -127.5f];
        Assert.Equal([0, 2, 2, 0, -2, -2, 126, -128], Quantize(ties, 1f, NumericConvention.Onnx));
        Assert.Equal([0, 2, 2, 0, -2, -2, 126, -128], Quantize(ties, 1f, NumericConvention.Torch));
        Assert.Equal([0, 2, 2, 0, -2, -2, 126, -128], Quantize(ties, 1f, NumericConvention.GoldenStick));
        Assert.Equal([1, 2, 3, -1, -2, -3, 127, -128], Quantize(ties, 1f, NumericConvention.GgmlQ8_0));
    }

    [Fact]
    public void DivisionAndReciprocal_DifferNearTies_AsFbgemmDocuments()
    {
        // fbgemm's QuantUtils.h: with scale 0.00214854861f, x * (1 / scale) is 127.5 but x / scale is 127.499992.
        const float scale = 0.00214854861f;
        const float x = 0.273939937f;
        Assert.Equal(127, NumericConvention.Onnx.Quantize(x, scale, 0, 0, 255));
        Assert.Equal(128, NumericConvention.Torch.Quantize(x, scale, 0, 0, 255));
        byte[] viaKernel = new byte[1];
        QuantizationPrimitives.Quantize([x], viaKernel, scale, 0, NumericConvention.Torch);
        Assert.Equal(128, viaKernel[0]);
    }

    [Fact]
    public void AllZeroChannel_GivesEachPeersDegenerateScale()
    {
        Assert.Equal(new ScaleAndZeroPoint(1f, 0), NumericConvention.Onnx.ComputeParameters(0f, 0f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(1f, 0), NumericConvention.Onnx.ComputeParameters(0f, 0f, QuantizedType.UInt8, symmetric: false));
        Assert.Equal(new ScaleAndZeroPoint(TorchEpsilon, 0), NumericConvention.Torch.ComputeParameters(0f, 0f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(TorchEpsilon, 0), NumericConvention.Torch.ComputeParameters(0f, 0f, QuantizedType.UInt8, symmetric: false));
        Assert.Equal(new ScaleAndZeroPoint(0f, 0), NumericConvention.GgmlQ8_0.ComputeParameters(0f, 0f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(1f, 0), NumericConvention.GoldenStick.ComputeParameters(0f, 0f, QuantizedType.Int8, symmetric: true));
        foreach (NumericConvention convention in NumericConvention.All)
        {
            Assert.Equal([0, 0, 0], QuantizeDynamic([0f, 0f, -0f], convention));
        }
    }

    [Fact]
    public void ConstantPositiveChannel_IncludesZeroInTheRange()
    {
        Assert.Equal(new ScaleAndZeroPoint((float)(6.0 / 254.0), 0), NumericConvention.Onnx.ComputeParameters(3f, 3f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint((float)(3.0 / 255.0), 0), NumericConvention.Onnx.ComputeParameters(3f, 3f, QuantizedType.UInt8, symmetric: false));
        Assert.Equal(new ScaleAndZeroPoint(3f / 255f, 0), NumericConvention.Torch.ComputeParameters(3f, 3f, QuantizedType.UInt8, symmetric: false));
        Assert.Equal(new ScaleAndZeroPoint(3f / 127.5f, 0), NumericConvention.Torch.ComputeParameters(3f, 3f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(1f / 127.5f, 128), NumericConvention.Torch.ComputeParameters(-1f, 1f, QuantizedType.UInt8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint((float)(2.0 / 255.0), 128), NumericConvention.Onnx.ComputeParameters(-1f, 1f, QuantizedType.UInt8, symmetric: true));
        foreach (NumericConvention convention in NumericConvention.All)
        {
            Assert.Equal([127, 127], QuantizeDynamic([3f, 3f], convention));
        }
    }

    [Fact]
    public void ChannelSpanning1e38_IsDegenerateButDeterministic()
    {
        float[] values = [-1e-38f, 1e-38f, 0f, 5e-39f];
        Assert.Equal(new ScaleAndZeroPoint(1f, 0), NumericConvention.Onnx.ComputeParameters(-1e-38f, 1e-38f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(TorchEpsilon, 0), NumericConvention.Torch.ComputeParameters(-1e-38f, 1e-38f, QuantizedType.Int8, symmetric: true));
        Assert.Equal(new ScaleAndZeroPoint(0f, 0), NumericConvention.GgmlQ8_0.ComputeParameters(-1e-38f, 1e-38f, QuantizedType.Int8, symmetric: true));
        foreach (NumericConvention convention in NumericConvention.All)
        {
            Assert.Equal([0, 0, 0, 0], QuantizeDynamic(values, convention));
        }
    }

    [Fact]
    public void HugeValues_SaturateAndHugeRangesStayFinite()
    {
        float[] values = [3e38f, -3e38f, 1e10f, -1e10f, 127.49f, 127.5f, -128.5f, float.MaxValue, float.MinValue];
        Assert.Equal([127, -128, 127, -128, 127, 127, -128, 127, -128], Quantize(values, 1f, NumericConvention.Onnx));
        Assert.Equal([127, -128, 127, -128, 127, 127, -128, 127, -128], Quantize(values, 1f, NumericConvention.GgmlQ8_0));

        // rmax - rmin overflows float: the width is taken in double instead of giving an infinite scale.
        foreach (NumericConvention convention in new[] { NumericConvention.Onnx, NumericConvention.Torch, NumericConvention.GoldenStick })
        {
            ScaleAndZeroPoint parameters = convention.ComputeParameters(-3e38f, 3e38f, QuantizedType.UInt8, symmetric: false);
            Assert.Equal((float)(2.0 * 3e38f / 255.0), parameters.Scale);
            Assert.Equal(ScalarReference.Parameters(-3e38f, 3e38f, 0, 255, false, convention).ZeroPoint, parameters.ZeroPoint);
            Assert.InRange(parameters.ZeroPoint, 127, 128);
        }

        Assert.Throws<ArgumentException>(() => NumericConvention.GgmlQ8_0.ComputeParameters(-1e7f, 1e7f, QuantizedType.Int8, symmetric: true));
    }

    [Fact]
    public void GgmlQ8_0Block_MatchesTheReferenceQuantizer()
    {
        // One block of 32 with amax 127: d = 1, so q = roundf(x) exactly, ties away from zero; a second block of zeros.
        float[] values = new float[64];
        for (int i = 0; i < 32; i++)
        {
            values[i] = (i - 16) + 0.5f;
        }

        values[31] = 127f;
        QuantizedTensor tensor = QuantizedTensor.Quantize(values, [2, 32], QuantizationScheme.GgmlQ8_0());
        Assert.Equal([1f, 0f], tensor.Parameters.Scales.ToArray());
        sbyte[] expected = values.Select(v => (sbyte)MathF.Round(v, MidpointRounding.AwayFromZero)).ToArray();
        Assert.Equal(expected, tensor.GetInt8Data().ToArray());
    }

    [Fact]
    public void DefaultRanges_FollowEachPeer()
    {
        Assert.Equal(QuantizationRange.Restricted, NumericConvention.Onnx.GetDefaultRange(QuantizedType.Int8, symmetric: true));
        Assert.Equal(QuantizationRange.Full, NumericConvention.Onnx.GetDefaultRange(QuantizedType.Int8, symmetric: false));
        Assert.Equal(QuantizationRange.Full, NumericConvention.Onnx.GetDefaultRange(QuantizedType.UInt8, symmetric: true));
        Assert.Equal(QuantizationRange.Full, NumericConvention.Torch.GetDefaultRange(QuantizedType.Int8, symmetric: true));
        Assert.Equal(QuantizationRange.Full, NumericConvention.GoldenStick.GetDefaultRange(QuantizedType.Int8, symmetric: true));
        Assert.Equal(QuantizationRange.Restricted, NumericConvention.GgmlQ8_0.GetDefaultRange(QuantizedType.Int8, symmetric: true));
        Assert.Equal((-7, 7), (new QuantizationScheme(QuantizedType.Int4, true, QuantizationGranularity.PerTensor).QuantMin, new QuantizationScheme(QuantizedType.Int4, true, QuantizationGranularity.PerTensor).QuantMax));
        Assert.Equal(new ScaleAndZeroPoint((float)(2.0 / 14.0), 0), NumericConvention.Onnx.ComputeParameters(-1f, 1f, QuantizedType.Int4, symmetric: true));
    }

    [Fact]
    public void Parse_FindsConventionsByNameIgnoringCase()
    {
        Assert.Same(NumericConvention.Torch, NumericConvention.Parse("torch"));
        Assert.Same(NumericConvention.GgmlQ8_0, NumericConvention.Parse("GGMLQ8_0"));
        Assert.Throws<ArgumentException>(() => NumericConvention.Parse("tflite"));
    }

    private static int[] Quantize(float[] values, float scale, NumericConvention convention)
    {
        sbyte[] destination = new sbyte[values.Length];
        QuantizationPrimitives.Quantize(values, destination, scale, 0, convention);
        return destination.Select(v => (int)v).ToArray();
    }

    private static int[] QuantizeDynamic(float[] values, NumericConvention convention)
    {
        QuantizationScheme scheme = new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerTensor, convention);
        return QuantizedTensor.Quantize(values, [values.Length], scheme).GetInt8Data().ToArray().Select(v => (int)v).ToArray();
    }
}
