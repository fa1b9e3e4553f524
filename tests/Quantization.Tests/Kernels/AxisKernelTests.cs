using System.Runtime.InteropServices;

using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Kernels;

/// <summary>Per-channel (any axis), per-group and per-token kernels against the brute-force reference.</summary>
public class AxisKernelTests
{
    [Fact]
    public void QuantizeAndDequantize_GivenParameters_MatchReferenceForEveryLayout()
    {
        Gen.Select(Generators.Layouts, Generators.Schemes, Gen.UInt).Sample(
            (layout, scheme, seed) =>
            {
                (int[] shape, QuantizationGranularity granularity) = layout;
                float[] values = Floats.Array(shape.Aggregate(1, (a, b) => a * b), seed);
                int count = ScalarReference.ParameterCount(shape, granularity);
                Assert.Equal(count, granularity.GetParameterShape(shape).Aggregate(1, (a, b) => a * b));
                Random random = new((int)seed);
                float[] scales = Enumerable.Range(0, count).Select(_ => (float)(0.01 + (random.NextDouble() * 4))).ToArray();
                int lo = scheme.Type.GetMinValue(), hi = scheme.Type.GetMaxValue();
                int[] zeroPoints = Enumerable.Range(0, count).Select(_ => random.Next(lo, hi + 1)).ToArray();

                byte[] quantized = new byte[values.Length];
                float[] restored = new float[values.Length];
                if (scheme.Type == QuantizedType.Int8)
                {
                    sbyte[] zp = zeroPoints.Select(z => (sbyte)z).ToArray();
                    QuantizationPrimitives.Quantize(values, shape, granularity, scales, zp, MemoryMarshal.Cast<byte, sbyte>(quantized.AsSpan()), scheme.Convention);
                    QuantizationPrimitives.Dequantize(MemoryMarshal.Cast<byte, sbyte>(quantized.AsSpan()), shape, granularity, scales, zp, restored);
                }
                else
                {
                    byte[] zp = zeroPoints.Select(z => (byte)z).ToArray();
                    QuantizationPrimitives.Quantize(values, shape, granularity, scales, zp, quantized, scheme.Convention);
                    QuantizationPrimitives.Dequantize(quantized, shape, granularity, scales, zp, restored);
                }

                for (int i = 0; i < values.Length; i++)
                {
                    int p = ScalarReference.ParameterIndex(shape, granularity, i);
                    int expected = ScalarReference.Quantize(values[i], scales[p], zeroPoints[p], lo, hi, scheme.Convention);
                    int actual = scheme.Type == QuantizedType.Int8 ? (sbyte)quantized[i] : quantized[i];
                    Assert.True(expected == actual, $"[{string.Join(",", shape)}] {granularity} index {i}: {actual} != {expected}");
                    Assert.Equal(ScalarReference.Dequantize(actual, scales[p], zeroPoints[p]), restored[i]);
                }
            },
            iter: 400);
    }

    [Fact]
    public void QuantizeDynamic_EveryLayoutAndConvention_MatchesBruteForceReference()
    {
        Gen.Select(Generators.Layouts, Generators.Schemes, Gen.UInt).Sample(
            (layout, baseScheme, seed) =>
            {
                (int[] shape, QuantizationGranularity granularity) = layout;
                QuantizationScheme scheme = baseScheme.WithGranularity(granularity);
                float[] values = Floats.Array(shape.Aggregate(1, (a, b) => a * b), seed).Select(v => Math.Clamp(v, -1e6f, 1e6f)).ToArray();
                (byte[] data, float[] scales, int[] zeroPoints) = ScalarReference.QuantizeDynamic(values, shape, scheme);

                QuantizedTensor tensor = QuantizedTensor.Quantize(values, shape, scheme, "w");
                Assert.Equal(data, tensor.Data.ToArray());
                Assert.Equal(scales, tensor.Parameters.Scales.ToArray());
                Assert.Equal(zeroPoints, tensor.Parameters.ZeroPoints.ToArray());

                float[] restored = tensor.Dequantize();
                for (int i = 0; i < values.Length; i++)
                {
                    int p = ScalarReference.ParameterIndex(shape, granularity, i);
                    int q = scheme.Type == QuantizedType.Int8 ? (sbyte)data[i] : data[i];
                    Assert.Equal(ScalarReference.Dequantize(q, scales[p], zeroPoints[p]), restored[i]);
                }
            },
            iter: 400);
    }

    [Fact]
    public void QuantizeDynamic_Int8Overload_FillsScalesAndZeroPoints()
    {
        float[] values = [0.5f, -1f, 2.1f, 4f, 0f, 0f, 0f, 0f, -3f, 1f, 1f, 1f];
        sbyte[] destination = new sbyte[12];
        float[] scales = new float[3];
        sbyte[] zeroPoints = new sbyte[3];
        QuantizationPrimitives.QuantizeDynamic(values, [3, 4], QuantizationScheme.Int8PerChannel(), destination, scales, zeroPoints, "w");
        Assert.Equal([(float)(8.0 / 254), 1f, (float)(6.0 / 254)], scales);
        Assert.Equal([0, 0, 0], zeroPoints);
        Assert.Equal([16, -32, 67, 127, 0, 0, 0, 0, -127, 42, 42, 42], destination);
    }

    [Fact]
    public void QuantizeDynamic_NonFiniteInAnyLayout_ReportsFlatIndex()
    {
        float[] values = Enumerable.Range(0, 6 * 8).Select(i => i * 0.1f).ToArray();
        values[29] = float.NegativeInfinity;
        foreach (QuantizationGranularity granularity in new[]
        {
            QuantizationGranularity.PerTensor, QuantizationGranularity.PerChannel(0), QuantizationGranularity.PerChannel(1),
            QuantizationGranularity.PerGroup(4), QuantizationGranularity.PerGroup(2, 0), QuantizationGranularity.PerToken,
        })
        {
            QuantizationScheme scheme = QuantizationScheme.Int8PerTensor().WithGranularity(granularity);
            NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => QuantizedTensor.Quantize(values, [6, 8], scheme, "blk.0.attn_q"));
            Assert.Equal(29, error.Index);
            Assert.Equal("blk.0.attn_q", error.TensorName);
        }
    }

    [Fact]
    public void QuantizeDynamic_EmptyTensor_GetsDefaultParameters()
    {
        QuantizedTensor tensor = QuantizedTensor.Quantize([], [4, 0], QuantizationScheme.Int8PerChannel());
        Assert.Equal(4, tensor.Parameters.Count);
        Assert.All(tensor.Parameters.Scales.ToArray(), s => Assert.Equal(1f, s));
        Assert.Empty(tensor.Dequantize());
    }
}
