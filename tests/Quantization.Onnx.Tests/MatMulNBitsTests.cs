using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>Weight-only quantization written as ONNX Runtime's com.microsoft.MatMulNBits (bits 8 and 4).</summary>
public class MatMulNBitsTests
{
    private static readonly string[] Attributes = ["K", "N", "bits", "block_size", "accuracy_level"];

    [Theory]
    [InlineData(64, 24, 16, true, false, 8)]
    [InlineData(64, 24, 32, false, false, 8)]
    [InlineData(40, 12, 16, true, false, 8)] // K not a multiple of the block: zero-padded
    [InlineData(40, 12, 32, false, true, 8)]
    [InlineData(40, 12, 16, false, true, 8)]
    [InlineData(64, 24, 16, true, false, 4)]
    [InlineData(64, 24, 32, false, false, 4)]
    [InlineData(37, 12, 16, true, false, 4)] // odd K: the last block holds 5 values and 11 of padding
    [InlineData(40, 12, 32, false, true, 4)]
    [InlineData(72, 9, 16, false, false, 4)] // 5 blocks: packed zero points end in half a byte
    public void OrtComputesTheLibrarysDequantizedWeight_BitForBit(int k, int n, int blockSize, bool symmetric, bool gemmTransB, int bits)
    {
        // A = I [K, K], so Y = A·W is W itself as ORT dequantizes it (accuracy level 1: fp32 arithmetic).
        float[] w = Random(k * n, 21, 4);
        for (int i = 0; i < w.Length; i += 7)
        {
            w[i] += 3; // one-signed blocks, where asymmetric zero points are far from the middle
        }

        ModelProto proto = gemmTransB
            ? Model("gemm", [Node("Gemm", "layer", ["a", "w"], ["y"], Int("transB", 1))], [Tensor("w", Transpose(w, k, n), n, k)], [Value("a", k, k)], [Value("y", k, n)])
            : Model("matmul", [Node("MatMul", "layer", ["a", "w"], ["y"])], [Tensor("w", w, k, n)], [Value("a", k, k)], [Value("y", k, n)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxWeightQuantizationOptions options = new()
        {
            Scheme = bits == 8 ? new QuantizationScheme(QuantizedType.Int8, symmetric, QuantizationGranularity.PerChannel()) : QuantizationScheme.Int4PerGroup(128, symmetric),
            MatMulNBits = new MatMulNBitsOptions { BlockSize = blockSize, AccuracyLevel = 1 },
        };
        OnnxWeightReport report = Assert.Single(OnnxWeightQuantizer.Quantize(model, options));
        Assert.Equal(gemmTransB ? "Gemm" : "MatMul", report.OpType);

        NodeProto node = Assert.Single(model.Proto.Graph.Node);
        Assert.Equal(("MatMulNBits", "com.microsoft", "layer"), (node.OpType, node.Domain, node.Name));
        int kBlocks = (k + blockSize - 1) / blockSize;
        Assert.Equal([k, n, bits, blockSize, 1], Attributes.Select(a => node.Attribute.Single(x => x.Name == a).I));
        Assert.Equal([n, kBlocks, blockSize * bits / 8], model.Proto.Graph.Initializer.Single(t => t.Name == node.Input[1]).Dims);
        Assert.Equal([n, kBlocks], model.Proto.Graph.Initializer.Single(t => t.Name == node.Input[2]).Dims);
        Assert.Equal(symmetric ? 3 : 4, node.Input.Count);
        Assert.Contains(model.Proto.OpsetImport, o => o.Domain == "com.microsoft");

        // The library's own dequantization of the same blocks: W's columns as rows, zero-padded, per group along K.
        int padded = kBlocks * blockSize;
        float[] rows = new float[n * padded];
        for (int j = 0; j < n; j++)
        {
            for (int i = 0; i < k; i++)
            {
                rows[(j * padded) + i] = w[(i * n) + j];
            }
        }

        float[] restored = QuantizedTensor.Quantize(rows, [n, padded], options.Scheme.WithGranularity(QuantizationGranularity.PerGroup(blockSize, axis: 1))).Dequantize();
        float[] identity = new float[k * k];
        for (int i = 0; i < k; i++)
        {
            identity[(i * k) + i] = 1;
        }

        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            float[] y = RunSingle(model.Proto.ToByteArray(), "a", identity, [k, k], level);
            for (int i = 0; i < k; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    Assert.Equal(BitConverter.SingleToInt32Bits(restored[(j * padded) + i]), BitConverter.SingleToInt32Bits(y[(i * n) + j]));
                }
            }
        }

        Assert.True(report.Report.CosineSimilarity > (bits == 8 ? 0.9999 : 0.99));
        int zeroPointBytes = symmetric ? 0 : n * (((kBlocks * bits) + 7) / 8);
        Assert.Equal((n * padded * bits / 8) + (n * kBlocks * 4) + zeroPointBytes, report.Report.BytesAfter);
    }

    [Fact]
    public void GemmBias_GoesIntoTheNode_AndUnfitNodesStayQdq()
    {
        float[] w = Random(16 * 8, 1), c = Random(8, 2);
        ModelProto proto = Model(
            "gemms",
            [
                Node("Gemm", "plain", ["x", "w1", "c"], ["h"], Int("transB", 1)),
                Node("Gemm", "scaled", ["h", "w2"], ["y"], new AttributeProto { Name = "alpha", Type = AttributeProto.Types.AttributeType.Float, F = 0.5f }),
            ],
            [Tensor("w1", w, 8, 16), Tensor("c", c, 8), Tensor("w2", Random(8 * 4, 3), 8, 4)],
            [Value("x", 3, 16)],
            [Value("y", 3, 4)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { MatMulNBits = new MatMulNBitsOptions { BlockSize = 16 } });
        NodeProto plain = model.Proto.Graph.Node.Single(n => n.Name == "plain");
        Assert.Equal("MatMulNBits", plain.OpType);
        Assert.Equal("c", plain.Input[5]);
        Assert.Equal("Gemm", model.Proto.Graph.Node.Single(n => n.Name == "scaled").OpType);
        Assert.Contains(model.Proto.Graph.Node, n => n.OpType == "DequantizeLinear" && n.Output[0] == "w2");

        float[] x = Random(3 * 16, 4, 2);
        float[] expected = RunSingle(proto.ToByteArray(), "x", x, [3, 16]);
        Assert.True(Cosine(expected, RunSingle(model.Proto.ToByteArray(), "x", x, [3, 16])) > 0.9999);
    }

    [Fact]
    public void BadSettings_AreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MatMulNBitsOptions { BlockSize = 8 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new MatMulNBitsOptions { BlockSize = 48 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new MatMulNBitsOptions { AccuracyLevel = 5 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new MatMulNBitsOptions { AccuracyLevel = -1 });
        ModelProto proto = Model("matmul", [Node("MatMul", "layer", ["a", "w"], ["y"])], [Tensor("w", Random(32 * 4, 1), 32, 4)], [Value("a", 2, 32)], [Value("y", 2, 4)]);
        Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(OnnxModel.Parse(proto.ToByteArray()), new OnnxWeightQuantizationOptions { MatMulNBits = new(), Gptq = new GptqOptions() }));
        NotSupportedException int4Qdq = Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(OnnxModel.Parse(proto.ToByteArray()), new OnnxWeightQuantizationOptions { Scheme = QuantizationScheme.Int4PerGroup(32) }));
        Assert.Contains("'layer'", int4Qdq.Message, StringComparison.Ordinal);
        Assert.Throws<NotSupportedException>(() => OnnxStaticQuantizer.Quantize(OnnxModel.Parse(proto.ToByteArray()), new Dictionary<string, QuantizationParameters>(), new OnnxStaticQuantizationOptions { MatMulNBits = new() }));
    }

    private static float[] Transpose(float[] values, int rows, int columns)
    {
        float[] transposed = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                transposed[(c * rows) + r] = values[(r * columns) + c];
            }
        }

        return transposed;
    }
}
