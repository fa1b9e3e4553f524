using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;
using Quantization.Samples;
using Xunit.Abstractions;
using static Quantization.Onnx.Tests.TestGraphs;
namespace Quantization.Onnx.Tests;
public class TmpProbe(ITestOutputHelper output)
{
    [Fact]
    public void Probe()
    {
        byte[] original = MiniLM.LoadModel();
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        var sentences = MiniLM.Sentences.Take(100).ToList();
        float[][] reference = Embed(original);
        var names = OnnxModel.Parse(original).Proto.Graph.Node.Where(n => n.OpType == "MatMul" && n.Input[1].Length > 0).Select(n => n.Name + " " + n.Input[1]).ToList();
        output.WriteLine(string.Join("\n", names.Take(8)));
        foreach (string mode in new[] { "col", "row", "best" })
        {
            OnnxModel model = OnnxModel.Parse(original);
            var g = model.Proto.Graph;
            foreach (var n in g.Node.Where(n => n.OpType == "MatMul"))
            {
                var t = g.Initializer.FirstOrDefault(i => i.Name == n.Input[1]);
                if (t == null || t.Dims.Count != 2) continue;
                float[] w = model.ReadFloats(t);
                int[] shape = [(int)t.Dims[0], (int)t.Dims[1]];
                var q1 = QuantizedTensor.Quantize(w, shape, QuantizationScheme.Int8PerChannel(1));
                var q0 = QuantizedTensor.Quantize(w, shape, QuantizationScheme.Int8PerChannel(0));
                var r1 = TensorErrorReport.Compare(w, q1); var r0 = TensorErrorReport.Compare(w, q0);
                if (mode == "best") output.WriteLine(FormattableString.Invariant($"{n.Name}: col {r1.SqnrDb:F1} row {r0.SqnrDb:F1}"));
                var q = mode == "col" ? q1 : mode == "row" ? q0 : (r0.SqnrDb > r1.SqnrDb ? q0 : q1);
                t.RawData = Google.Protobuf.ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(q.Dequantize().AsSpan()));
                t.FloatData.Clear();
            }
            double[] c2 = [.. Embed(Google.Protobuf.MessageExtensions.ToByteArray(model.Proto)).Select((e, i) => Cosine(reference[i], e))];
            output.WriteLine(FormattableString.Invariant($"{mode}: mean {c2.Average():F6} worst {c2.Min():F6}"));
        }
        float[][] Embed(byte[] bytes)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC, IntraOpNumThreads = 1 };
            using InferenceSession session = new(bytes, options);
            return MiniLM.Embed(session, tokenizer, sentences);
        }
    }
}
