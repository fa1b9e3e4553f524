using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>4-bit and blocked weights written as DequantizeLinear of opset 21 (int4 / uint4), run in ONNX Runtime.</summary>
public class Int4QdqTests
{
    [Theory]
    [InlineData(true, 0)] // int4 per channel
    [InlineData(false, 0)] // uint4 per channel
    [InlineData(true, 16)] // int4 in blocks of 16 along K
    [InlineData(false, 16)]
    [InlineData(true, 24)] // blocks that do not divide K = 40: the last holds 16
    public void MatMul_OrtDequantizesTheLibrarysCodes_BitForBit(bool symmetric, int blockSize)
    {
        int k = 40, n = 12;
        float[] w = Random(k * n, 5, 3);
        ModelProto proto = Model("matmul", [Node("MatMul", "layer", ["a", "w"], ["y"])], [Tensor("w", w, k, n)], [Value("a", k, k)], [Value("y", k, n)], opset: 21);
        proto.IrVersion = 10;
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(32, symmetric);
        scheme = scheme.WithGranularity(blockSize == 0 ? QuantizationGranularity.PerChannel() : QuantizationGranularity.PerGroup(blockSize));
        OnnxWeightReport report = Assert.Single(OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { Scheme = scheme }));
        Assert.Equal(blockSize == 0 ? 1 : 0, report.Axis); // MatMul's B: channels on the last axis, blocks along K
        TensorProto codes = model.Proto.Graph.Initializer.Single(t => t.Name.StartsWith("w_quantized", StringComparison.Ordinal));
        Assert.Equal(symmetric ? 22 : 21, codes.DataType);
        Assert.Equal((k * n) / 2, codes.RawData.Length);
        NodeProto dequantize = model.Proto.Graph.Node.Single(x => x.OpType == "DequantizeLinear");
        Assert.Equal(blockSize, dequantize.Attribute.SingleOrDefault(a => a.Name == "block_size")?.I ?? 0);

        // The library's own dequantization of the same weight, and ORT's: A = I gives Y = dequant(W) exactly.
        QuantizationScheme expectedScheme = scheme.WithGranularity(blockSize == 0 ? QuantizationGranularity.PerChannel(1) : QuantizationGranularity.PerGroup(blockSize, axis: 0));
        float[] expected = QuantizedTensor.Quantize(w, [k, n], expectedScheme).Dequantize();
        float[] identity = new float[k * k];
        for (int i = 0; i < k; i++)
        {
            identity[(i * k) + i] = 1;
        }

        float[] exact = RunSingle(model.Proto.ToByteArray(), "a", identity, [k, k], GraphOptimizationLevel.ORT_DISABLE_ALL);
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), exact.Select(BitConverter.SingleToInt32Bits));

        // From the basic level on, ORT fuses int4 DequantizeLinear + MatMul into its MatMulNBits where the blocks allow
        // (per channel too), which quantizes A to int8 (accuracy level 4): the same weight, within that rounding.
        float[] fused = RunSingle(model.Proto.ToByteArray(), "a", identity, [k, k], GraphOptimizationLevel.ORT_ENABLE_BASIC);
        Assert.True(expected.Zip(fused).All(p => Math.Abs(p.First - p.Second) <= 1e-6f * Math.Abs(p.First)), "ORT's fused MatMulNBits computes the same weight");
    }

    [Fact]
    public void Conv_Int4PerChannelAndBlocks_RunInOrtAfterAnUpgradeTo21()
    {
        float[] w = Random(8 * 32 * 3 * 3, 2);
        ModelProto proto = Model("conv", [Node("Conv", "conv", ["x", "w"], ["y"], Ints("pads", 1, 1, 1, 1))], [Tensor("w", w, 8, 32, 3, 3)], [Value("x", 1, 32, 6, 6)], [Value("y", 1, 8, 6, 6)]);
        float[] x = Random(32 * 6 * 6, 3);
        float[] reference = RunSingle(proto.ToByteArray(), "x", x, [1, 32, 6, 6]);
        foreach (QuantizationGranularity granularity in new[] { QuantizationGranularity.PerChannel(), QuantizationGranularity.PerGroup(16) })
        {
            OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
            QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(32).WithGranularity(granularity);
            NotSupportedException old = Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { Scheme = scheme }));
            Assert.Contains("needs opset 21", old.Message, StringComparison.Ordinal);
            OnnxOpsetUpgrader.Upgrade(model, 21);
            OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { Scheme = scheme });
            Assert.Equal(granularity.Kind == GranularityKind.PerGroup ? [8, 2, 3, 3] : [8L], model.Proto.Graph.Initializer.Single(t => t.Name.StartsWith("w_scale", StringComparison.Ordinal)).Dims);
            float[] y = RunSingle(model.Proto.ToByteArray(), "x", x, [1, 32, 6, 6]);
            Assert.True(Cosine(reference, y) > 0.98, $"{granularity}: cosine {Cosine(reference, y)}");
        }
    }
}
