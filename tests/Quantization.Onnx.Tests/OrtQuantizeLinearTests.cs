using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx.Tests;

/// <summary>
/// ONNX Runtime as the oracle: tiny QuantizeLinear / DequantizeLinear graphs, written with this project's ONNX
/// messages, run in ORT and compared bit for bit with the core kernels (ONNX convention) on over a million values.
/// </summary>
public class OrtQuantizeLinearTests
{
    private const int Rows = 1024, Columns = 1024;
    private static readonly float[] Scales = [1f, 0.5f, 0.0123f, 0.00214854861f, 3.7f, 1e-3f];

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QuantizeLinear_PerTensor_IsBitExactWithOrt(bool signed)
    {
        foreach (float scale in Scales)
        {
            float[] x = Values(Rows * Columns, scale, seed: 1);
            int zeroPoint = signed ? -3 : 131;
            byte[] expected = RunQuantize(x, [Rows, Columns], [scale], [zeroPoint], axis: null, signed);
            byte[] actual = new byte[x.Length];
            if (signed)
            {
                QuantizationPrimitives.Quantize(x, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(actual.AsSpan()), scale, (sbyte)zeroPoint);
            }
            else
            {
                QuantizationPrimitives.Quantize(x, actual, scale, (byte)zeroPoint);
            }

            AssertSame(expected, actual, x, $"scale {scale:R}");
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void QuantizeAndDequantizeLinear_PerAxis_AreBitExactWithOrt(int axis)
    {
        int channels = axis == 0 ? Rows : Columns;
        float[] scales = Enumerable.Range(0, channels).Select(c => Scales[c % Scales.Length] * (1 + (c % 3))).ToArray();
        int[] zeroPoints = Enumerable.Range(0, channels).Select(c => (c % 11) - 5).ToArray();
        float[] x = Values(Rows * Columns, 0.01f, seed: 2 + axis);
        byte[] expected = RunQuantize(x, [Rows, Columns], scales, zeroPoints, axis, signed: true);
        sbyte[] actual = new sbyte[x.Length];
        QuantizationPrimitives.Quantize(x, [Rows, Columns], QuantizationGranularity.PerChannel(axis), scales, zeroPoints.Select(z => (sbyte)z).ToArray(), actual);
        AssertSame(expected, (byte[])(Array)actual, x, $"axis {axis}");

        float[] expectedReal = RunDequantize(actual, [Rows, Columns], scales, zeroPoints, axis);
        float[] actualReal = new float[x.Length];
        QuantizationPrimitives.Dequantize(actual, [Rows, Columns], QuantizationGranularity.PerChannel(axis), scales, zeroPoints.Select(z => (sbyte)z).ToArray(), actualReal);
        for (int i = 0; i < actualReal.Length; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(expectedReal[i]) == BitConverter.SingleToInt32Bits(actualReal[i]), $"dequantize index {i}: ORT {expectedReal[i]:R}, ours {actualReal[i]:R}");
        }
    }

    /// <summary>Values around a scale: exact ties (k + 0.5) * scale, neighbours one ulp away, ordinary, subnormal and out-of-range values.</summary>
    private static float[] Values(int count, float scale, int seed)
    {
        Random random = new(seed);
        float[] values = new float[count];
        for (int i = 0; i < count; i++)
        {
            float tie = (random.Next(-300, 300) + 0.5f) * scale;
            values[i] = (i % 8) switch
            {
                0 or 1 => tie,
                2 => MathF.BitIncrement(tie),
                3 => MathF.BitDecrement(tie),
                4 => (float)((random.NextDouble() - 0.5) * 600 * scale),
                5 => random.Next(-1000, 1000) * float.Epsilon,
                6 => (float)((random.NextDouble() - 0.5) * 1e6),
                _ => (float)(random.NextDouble() - 0.5),
            };
        }

        return values;
    }

    private static byte[] RunQuantize(float[] x, long[] shape, float[] scales, int[] zeroPoints, int? axis, bool signed)
    {
        TensorProto.Types.DataType type = signed ? TensorProto.Types.DataType.Int8 : TensorProto.Types.DataType.Uint8;
        byte[] model = Model("QuantizeLinear", TensorProto.Types.DataType.Float, type, shape, scales, zeroPoints, axis, type);
        using InferenceSession session = new(model);
        using OrtValue input = OrtValue.CreateTensorValueFromMemory(x, shape);
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(new RunOptions(), ["x"], [input], ["y"]);
        return signed ? outputs[0].GetTensorDataAsSpan<sbyte>().ToArray().Select(v => (byte)v).ToArray() : outputs[0].GetTensorDataAsSpan<byte>().ToArray();
    }

    private static float[] RunDequantize(sbyte[] q, long[] shape, float[] scales, int[] zeroPoints, int? axis)
    {
        byte[] model = Model("DequantizeLinear", TensorProto.Types.DataType.Int8, TensorProto.Types.DataType.Float, shape, scales, zeroPoints, axis, TensorProto.Types.DataType.Int8);
        using InferenceSession session = new(model);
        using OrtValue input = OrtValue.CreateTensorValueFromMemory(q, shape);
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(new RunOptions(), ["x"], [input], ["y"]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary>A one-node opset-13 model: y = op(x, scale, zero_point), with the parameters as raw-data initializers.</summary>
    private static byte[] Model(string op, TensorProto.Types.DataType inputType, TensorProto.Types.DataType outputType, long[] shape, float[] scales, int[] zeroPoints, int? axis, TensorProto.Types.DataType zeroPointType)
    {
        long[] parameterShape = axis is null ? [] : [scales.Length];
        NodeProto node = new() { OpType = op, Name = op, Input = { "x", "scale", "zero_point" }, Output = { "y" } };
        if (axis is int a)
        {
            node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = a });
        }

        GraphProto graph = new()
        {
            Name = "oracle",
            Node = { node },
            Initializer =
            {
                new TensorProto { Name = "scale", DataType = (int)TensorProto.Types.DataType.Float, Dims = { parameterShape }, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(scales.AsSpan())) },
                new TensorProto { Name = "zero_point", DataType = (int)zeroPointType, Dims = { parameterShape }, RawData = ByteString.CopyFrom(zeroPoints.Select(z => (byte)z).ToArray()) },
            },
            Input = { Value("x", inputType, shape) },
            Output = { Value("y", outputType, shape) },
        };
        ModelProto model = new() { IrVersion = 8, ProducerName = "Quantization.Onnx.Tests", Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = string.Empty, Version = 13 } } };
        return model.ToByteArray();
    }

    private static ValueInfoProto Value(string name, TensorProto.Types.DataType type, long[] shape)
    {
        TensorShapeProto tensorShape = new();
        foreach (long dim in shape)
        {
            tensorShape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = dim });
        }

        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = tensorShape } } };
    }

    private static void AssertSame(byte[] expected, byte[] actual, float[] x, string context)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(expected[i] == actual[i], $"{context}, index {i}: x = {x[i]:R}, ORT {expected[i]}, ours {actual[i]}");
        }
    }
}
