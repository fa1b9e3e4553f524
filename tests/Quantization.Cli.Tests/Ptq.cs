using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Cli.Tests;

/// <summary>Runs ptq as a child process and builds the small inputs the tests feed it.</summary>
internal static class Ptq
{
    /// <summary>A value the test project's build recorded (an <see cref="AssemblyMetadataAttribute"/>: project and package paths).</summary>
    public static string Metadata(string key) =>
        typeof(Ptq).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    /// <summary>Runs the built ptq (next to the tests) or a given executable, and returns its exit code and output.</summary>
    public static (int ExitCode, string Output, string Error) Run(params string[] arguments) =>
        RunProgram("dotnet", [Path.Combine(AppContext.BaseDirectory, "Quantization.Cli.dll"), .. arguments]);

    public static (int ExitCode, string Output, string Error) RunProgram(string program, IEnumerable<string> arguments, IDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        ProcessStartInfo start = new(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workingDirectory ?? "" };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach ((string key, string value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} did not finish in 5 minutes.");
        }

        return (process.ExitCode, output.Result, error.Result);
    }

    /// <summary>x [2, 16] -> MatMul(w [16, 8]) = y, opset 13.</summary>
    public static void WriteMatMulModel(string path)
    {
        Random random = new(3);
        float[] weight = [.. Enumerable.Range(0, 16 * 8).Select(_ => (float)(random.NextDouble() - 0.5))];
        ModelProto model = new()
        {
            IrVersion = 8,
            OpsetImport = { new OperatorSetIdProto { Version = 13 } },
            Graph = new GraphProto
            {
                Name = "matmul",
                Node = { new NodeProto { Name = "matmul", OpType = "MatMul", Input = { "x", "w" }, Output = { "y" } } },
                Initializer = { new TensorProto { Name = "w", DataType = (int)TensorProto.Types.DataType.Float, Dims = { 16, 8 }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(weight.AsSpan())) } },
                Input = { Value("x", 2, 16) },
                Output = { Value("y", 2, 8) },
            },
        };
        File.WriteAllBytes(path, model.ToByteArray());
    }

    /// <summary>A checkpoint of fp16 tensors in one file: an embedding, two [out, in] weights and a norm.</summary>
    public static void WriteCheckpoint(string path)
    {
        Random random = new(4);
        (string Name, long[] Shape)[] tensors = [("model.embed_tokens.weight", [32, 16]), ("model.layers.0.mlp.up_proj.weight", [64, 16]), ("model.layers.0.mlp.down_proj.weight", [16, 64]), ("model.norm.weight", [16])];
        using SafeTensorsWriter writer = SafeTensorsWriter.Create(path, tensors.Select(t => new SafeTensorDescriptor(t.Name, SafeTensorDataType.Float16, t.Shape)));
        foreach ((string _, long[] shape) in tensors)
        {
            writer.Write<Half>([.. Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(_ => (Half)(random.NextDouble() - 0.5))]);
        }

        writer.Commit();
    }

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        TensorShapeProto shape = new();
        shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }
}
