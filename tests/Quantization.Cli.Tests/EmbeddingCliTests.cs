using Quantization.Onnx;
using Quantization.Samples;

namespace Quantization.Cli.Tests;

/// <summary><c>ptq quantize --quantize-embeddings</c> on all-MiniLM-L6-v2, whose word embeddings are 47 MB of its 90 MB.</summary>
public sealed class EmbeddingCliTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-embeddings-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData(new string[0], true, 0.26)]
    [InlineData(new[] { "--quantize-embeddings", "true" }, true, 0.26)]
    [InlineData(new[] { "--quantize-embeddings", "false" }, false, 0.65)]
    public void QuantizeEmbeddings_OnByDefault_FalseKeepsTheTableInFloat(string[] flags, bool quantized, double ratio)
    {
        string model = Path.Combine(_directory, "minilm.onnx"), output = Path.Combine(_directory, "minilm.int8.onnx");
        File.WriteAllBytes(model, MiniLM.LoadModel());

        (int code, string stdout, string stderr) = Ptq.Run(["quantize", model, "-o", output, .. flags]);

        Assert.True(code == 0, stderr);
        Assert.Equal(quantized, stdout.Contains("embeddings.word_embeddings.weight", StringComparison.Ordinal));
        Assert.Equal(quantized ? "GatherBlockQuantized" : "Gather", OnnxModel.Load(output).Proto.Graph.Node.Single(n => n.Input.Any(i => i.StartsWith("embeddings.word_embeddings.weight", StringComparison.Ordinal))).OpType);
        double size = (double)new FileInfo(output).Length / new FileInfo(model).Length;
        Assert.True(Math.Abs(size - ratio) < 0.01, $"{size:F3} of the float model's size");
    }

    [Fact]
    public void QuantizeEmbeddings_AppliesToOnnxOnly()
    {
        string checkpoint = Path.Combine(_directory, "model.safetensors");
        Ptq.WriteCheckpoint(checkpoint);

        (int code, string _, string stderr) = Ptq.Run("quantize", checkpoint, "-o", Path.Combine(_directory, "int8"), "--quantize-embeddings", "false");

        Assert.Equal(1, code);
        Assert.Contains("--quantize-embeddings applies to ONNX models", stderr, StringComparison.Ordinal);
    }
}
